from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HeatmapFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HEATMAP_FORMAT_NONE: _ClassVar[HeatmapFormat]
    HEATMAP_FORMAT_F16: _ClassVar[HeatmapFormat]
    HEATMAP_FORMAT_PNG: _ClassVar[HeatmapFormat]
HEATMAP_FORMAT_NONE: HeatmapFormat
HEATMAP_FORMAT_F16: HeatmapFormat
HEATMAP_FORMAT_PNG: HeatmapFormat

class Box(_message.Message):
    __slots__ = ("x", "y", "w", "h")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    W_FIELD_NUMBER: _ClassVar[int]
    H_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    w: float
    h: float
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ..., w: _Optional[float] = ..., h: _Optional[float] = ...) -> None: ...

class CameraIntrinsics(_message.Message):
    __slots__ = ("fx", "fy", "cx", "cy")
    FX_FIELD_NUMBER: _ClassVar[int]
    FY_FIELD_NUMBER: _ClassVar[int]
    CX_FIELD_NUMBER: _ClassVar[int]
    CY_FIELD_NUMBER: _ClassVar[int]
    fx: float
    fy: float
    cx: float
    cy: float
    def __init__(self, fx: _Optional[float] = ..., fy: _Optional[float] = ..., cx: _Optional[float] = ..., cy: _Optional[float] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("image", "content_type", "boxes", "intrinsics", "root_depth_mm", "heatmaps", "timeout_s", "request_id", "tracking", "timestamp_s")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    BOXES_FIELD_NUMBER: _ClassVar[int]
    INTRINSICS_FIELD_NUMBER: _ClassVar[int]
    ROOT_DEPTH_MM_FIELD_NUMBER: _ClassVar[int]
    HEATMAPS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TRACKING_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_S_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    content_type: str
    boxes: _containers.RepeatedCompositeFieldContainer[Box]
    intrinsics: CameraIntrinsics
    root_depth_mm: float
    heatmaps: HeatmapFormat
    timeout_s: float
    request_id: str
    tracking: Tracking
    timestamp_s: float
    def __init__(self, image: _Optional[bytes] = ..., content_type: _Optional[str] = ..., boxes: _Optional[_Iterable[_Union[Box, _Mapping]]] = ..., intrinsics: _Optional[_Union[CameraIntrinsics, _Mapping]] = ..., root_depth_mm: _Optional[float] = ..., heatmaps: _Optional[_Union[HeatmapFormat, str]] = ..., timeout_s: _Optional[float] = ..., request_id: _Optional[str] = ..., tracking: _Optional[_Union[Tracking, _Mapping]] = ..., timestamp_s: _Optional[float] = ...) -> None: ...

class Tracking(_message.Message):
    __slots__ = ("smooth", "min_cutoff", "beta", "d_cutoff", "max_missed", "detect_every")
    SMOOTH_FIELD_NUMBER: _ClassVar[int]
    MIN_CUTOFF_FIELD_NUMBER: _ClassVar[int]
    BETA_FIELD_NUMBER: _ClassVar[int]
    D_CUTOFF_FIELD_NUMBER: _ClassVar[int]
    MAX_MISSED_FIELD_NUMBER: _ClassVar[int]
    DETECT_EVERY_FIELD_NUMBER: _ClassVar[int]
    smooth: bool
    min_cutoff: float
    beta: float
    d_cutoff: float
    max_missed: int
    detect_every: int
    def __init__(self, smooth: _Optional[bool] = ..., min_cutoff: _Optional[float] = ..., beta: _Optional[float] = ..., d_cutoff: _Optional[float] = ..., max_missed: _Optional[int] = ..., detect_every: _Optional[int] = ...) -> None: ...

class Vec2(_message.Message):
    __slots__ = ("x", "y")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ...) -> None: ...

class Vec3(_message.Message):
    __slots__ = ("x", "y", "z")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    Z_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    z: float
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ..., z: _Optional[float] = ...) -> None: ...

class Joint(_message.Message):
    __slots__ = ("name", "pixel", "camera_mm", "relative_mm", "normalised", "uncertainty_mm", "visibility")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PIXEL_FIELD_NUMBER: _ClassVar[int]
    CAMERA_MM_FIELD_NUMBER: _ClassVar[int]
    RELATIVE_MM_FIELD_NUMBER: _ClassVar[int]
    NORMALISED_FIELD_NUMBER: _ClassVar[int]
    UNCERTAINTY_MM_FIELD_NUMBER: _ClassVar[int]
    VISIBILITY_FIELD_NUMBER: _ClassVar[int]
    name: str
    pixel: Vec2
    camera_mm: Vec3
    relative_mm: Vec3
    normalised: Vec3
    uncertainty_mm: Vec3
    visibility: float
    def __init__(self, name: _Optional[str] = ..., pixel: _Optional[_Union[Vec2, _Mapping]] = ..., camera_mm: _Optional[_Union[Vec3, _Mapping]] = ..., relative_mm: _Optional[_Union[Vec3, _Mapping]] = ..., normalised: _Optional[_Union[Vec3, _Mapping]] = ..., uncertainty_mm: _Optional[_Union[Vec3, _Mapping]] = ..., visibility: _Optional[float] = ...) -> None: ...

class Heatmaps(_message.Message):
    __slots__ = ("format", "shape", "dtype", "data", "scale")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    format: HeatmapFormat
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: str
    data: bytes
    scale: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, format: _Optional[_Union[HeatmapFormat, str]] = ..., shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[str] = ..., data: _Optional[bytes] = ..., scale: _Optional[_Iterable[float]] = ...) -> None: ...

class Crop(_message.Message):
    __slots__ = ("centre", "side")
    CENTRE_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    centre: Vec2
    side: float
    def __init__(self, centre: _Optional[_Union[Vec2, _Mapping]] = ..., side: _Optional[float] = ...) -> None: ...

class Person(_message.Message):
    __slots__ = ("box", "box_source", "crop", "root_depth_mm", "root_depth_source", "joints", "heatmaps", "detection_score", "track_id")
    BOX_FIELD_NUMBER: _ClassVar[int]
    BOX_SOURCE_FIELD_NUMBER: _ClassVar[int]
    CROP_FIELD_NUMBER: _ClassVar[int]
    ROOT_DEPTH_MM_FIELD_NUMBER: _ClassVar[int]
    ROOT_DEPTH_SOURCE_FIELD_NUMBER: _ClassVar[int]
    JOINTS_FIELD_NUMBER: _ClassVar[int]
    HEATMAPS_FIELD_NUMBER: _ClassVar[int]
    DETECTION_SCORE_FIELD_NUMBER: _ClassVar[int]
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    box: Box
    box_source: str
    crop: Crop
    root_depth_mm: float
    root_depth_source: str
    joints: _containers.RepeatedCompositeFieldContainer[Joint]
    heatmaps: Heatmaps
    detection_score: float
    track_id: int
    def __init__(self, box: _Optional[_Union[Box, _Mapping]] = ..., box_source: _Optional[str] = ..., crop: _Optional[_Union[Crop, _Mapping]] = ..., root_depth_mm: _Optional[float] = ..., root_depth_source: _Optional[str] = ..., joints: _Optional[_Iterable[_Union[Joint, _Mapping]]] = ..., heatmaps: _Optional[_Union[Heatmaps, _Mapping]] = ..., detection_score: _Optional[float] = ..., track_id: _Optional[int] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "backend")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    backend: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., backend: _Optional[str] = ...) -> None: ...

class ImageSize(_message.Message):
    __slots__ = ("width", "height")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message", "retry_after")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    retry_after: float
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., retry_after: _Optional[float] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("model", "image", "intrinsics", "intrinsics_source", "persons", "timings_ms", "request_id", "error")
    class TimingsMsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    INTRINSICS_FIELD_NUMBER: _ClassVar[int]
    INTRINSICS_SOURCE_FIELD_NUMBER: _ClassVar[int]
    PERSONS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_MS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    model: ModelInfo
    image: ImageSize
    intrinsics: CameraIntrinsics
    intrinsics_source: str
    persons: _containers.RepeatedCompositeFieldContainer[Person]
    timings_ms: _containers.ScalarMap[str, float]
    request_id: str
    error: Error
    def __init__(self, model: _Optional[_Union[ModelInfo, _Mapping]] = ..., image: _Optional[_Union[ImageSize, _Mapping]] = ..., intrinsics: _Optional[_Union[CameraIntrinsics, _Mapping]] = ..., intrinsics_source: _Optional[str] = ..., persons: _Optional[_Iterable[_Union[Person, _Mapping]]] = ..., timings_ms: _Optional[_Mapping[str, float]] = ..., request_id: _Optional[str] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelDescription(_message.Message):
    __slots__ = ("name", "version", "backend", "input_size", "joints", "parents", "card", "detector")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    INPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    JOINTS_FIELD_NUMBER: _ClassVar[int]
    PARENTS_FIELD_NUMBER: _ClassVar[int]
    CARD_FIELD_NUMBER: _ClassVar[int]
    DETECTOR_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    backend: str
    input_size: int
    joints: _containers.RepeatedScalarFieldContainer[str]
    parents: _containers.RepeatedScalarFieldContainer[int]
    card: _struct_pb2.Struct
    detector: ModelInfo
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., backend: _Optional[str] = ..., input_size: _Optional[int] = ..., joints: _Optional[_Iterable[str]] = ..., parents: _Optional[_Iterable[int]] = ..., card: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., detector: _Optional[_Union[ModelInfo, _Mapping]] = ...) -> None: ...
