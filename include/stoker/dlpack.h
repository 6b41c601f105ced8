// DLPack export of TensorViews: the ABI types of DLPack 1.x that stoker needs,
// written from the DLPack specification (https://dmlc.github.io/dlpack), and
// the functions that wrap a view into a DLManagedTensorVersioned (DLPack >= 1.0
// consumers: torch >= 2.3, numpy >= 2.1, cupy, jax) or into the legacy
// DLManagedTensor (older consumers, e.g. torch 1.13, which only takes the
// legacy "dltensor" capsule).
//
// Coexistence with the real dlpack.h: include it first, if at all. When it is
// DLPack >= 1.0 (DLPACK_MAJOR_VERSION defined) it supplies every type and this
// header defines none; when it is 0.x (DLPACK_VERSION only, e.g. Debian's 0.6)
// this header adds only the versioned types. Otherwise this header defines
// them all and claims dlpack.h's include guard, so a later
// #include <dlpack/dlpack.h> adds nothing that would clash.
#pragma once

#include <cstdint>
#include <memory>

#include "stoker/result.h"
#include "stoker/tensor.h"

#if !defined(DLPACK_MAJOR_VERSION)
#if !defined(DLPACK_VERSION)
#define DLPACK_DLPACK_H_
#define DLPACK_MAJOR_VERSION 1
#define DLPACK_MINOR_VERSION 0
#define DLPACK_ABI_VERSION 1
#define STOKER_DEFINES_DLPACK_TYPES 1

extern "C" {

// Where a tensor's memory is (DLPack's device type codes).
typedef enum {
  kDLCPU = 1,
  kDLCUDA = 2,
  kDLCUDAHost = 3,  // page-locked host memory, allocated by CUDA
  kDLOpenCL = 4,
  kDLVulkan = 7,
  kDLMetal = 8,
  kDLVPI = 9,
  kDLROCM = 10,
  kDLROCMHost = 11,
  kDLExtDev = 12,
  kDLCUDAManaged = 13,
  kDLOneAPI = 14,
  kDLWebGPU = 15,
  kDLHexagon = 16,
  kDLMAIA = 17,
} DLDeviceType;

typedef struct {
  DLDeviceType device_type;
  int32_t device_id;  // the GPU ordinal; 0 for host memory
} DLDevice;

// Type classes of DLDataType::code.
typedef enum {
  kDLInt = 0U,
  kDLUInt = 1U,
  kDLFloat = 2U,
  kDLOpaqueHandle = 3U,
  kDLBfloat = 4U,
  kDLComplex = 5U,
  kDLBool = 6U,
} DLDataTypeCode;

typedef struct {
  uint8_t code;    // a DLDataTypeCode
  uint8_t bits;    // bits of one lane
  uint16_t lanes;  // 1 for scalars
} DLDataType;

typedef struct {
  void* data;  // start of the allocation; the first element is at data + byte_offset
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t* shape;    // ndim extents
  int64_t* strides;  // ndim strides in elements, or NULL for row-major
  uint64_t byte_offset;
} DLTensor;

// The pre-1.0 managed tensor (capsule name "dltensor").
typedef struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(struct DLManagedTensor* self);
} DLManagedTensor;

}  // extern "C"
#endif  // !DLPACK_VERSION: no dlpack.h before this one

extern "C" {

typedef struct {
  uint32_t major;  // a consumer refuses a tensor of another major version
  uint32_t minor;
} DLPackVersion;

// DLManagedTensorVersioned::flags bits.
#define DLPACK_FLAG_BITMASK_READ_ONLY (UINT64_C(1) << 0)
#define DLPACK_FLAG_BITMASK_IS_COPIED (UINT64_C(1) << 1)

// The managed tensor of DLPack >= 1.0 (capsule name "dltensor_versioned").
typedef struct DLManagedTensorVersioned {
  DLPackVersion version;
  void* manager_ctx;
  void (*deleter)(struct DLManagedTensorVersioned* self);
  uint64_t flags;
  DLTensor dl_tensor;
} DLManagedTensorVersioned;

}  // extern "C"
#endif  // !DLPACK_MAJOR_VERSION

namespace stoker {

// The DLPack version the exported versioned tensors declare.
inline constexpr uint32_t kDLPackExportMajor = 1;
inline constexpr uint32_t kDLPackExportMinor = 0;
// DLDataTypeCode of bool (kDLBool, DLPack >= 0.8), spelled as a number so it
// compiles against an older dlpack.h too.
inline constexpr uint8_t kDLPackBoolCode = 6;

// Runs the tensor's own deleter: for std::unique_ptr.
struct DLPackDeleter {
  void operator()(DLManagedTensorVersioned* tensor) const {
    if (tensor != nullptr && tensor->deleter != nullptr) tensor->deleter(tensor);
  }
  void operator()(DLManagedTensor* tensor) const {
    if (tensor != nullptr && tensor->deleter != nullptr) tensor->deleter(tensor);
  }
};
// An exported tensor that is deleted unless ownership is handed on with
// release() (to a PyCapsule, a framework's from_dlpack, ...).
using DLPackTensor = std::unique_ptr<DLManagedTensorVersioned, DLPackDeleter>;
using LegacyDLPackTensor = std::unique_ptr<DLManagedTensor, DLPackDeleter>;

// Wraps `view` for a DLPack consumer, without copying. The tensor holds
// `keep_alive` (e.g. the object whose destruction returns the landing slot)
// until its deleter runs, so the memory outlives every consumer: give all
// tensors of a batch the same shared_ptr and the slot returns when the last
// deleter has run. The deleter may run on any thread; it frees what export
// allocated and drops `keep_alive`, nothing else.
//
// Devices: device memory -> kDLCUDA with the GPU ordinal, pinned -> kDLCUDAHost,
// host -> kDLCPU (both with id 0). dtypes: every stoker DType maps to its
// DLPack (code, bits, 1 lane); bool is kDLBool in a versioned tensor and
// uint8 (same bytes: 0 or 1) in a legacy one, because pre-0.8 consumers such
// as torch 1.13 do not know kDLBool. Strides are always given, in elements.
// Fails only on an empty view or an allocation failure.
Result<DLPackTensor> to_dlpack(const TensorView& view, std::shared_ptr<void> keep_alive,
                               bool read_only = false);
Result<LegacyDLPackTensor> to_legacy_dlpack(const TensorView& view,
                                            std::shared_ptr<void> keep_alive);

// The DLPack dtype of a stoker DType (legacy: bool as uint8).
DLDataType dlpack_dtype(DType dtype, bool legacy = false);
// The DLPack device of a view's memory.
DLDevice dlpack_device(const TensorView& view);

}  // namespace stoker
