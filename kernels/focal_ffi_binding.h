// The operands, results and attributes of the "fusedfocal_focal_loss" custom
// call, shared by its host (focal_ffi_cpu.cc) and CUDA (focal_ffi_cuda.cc)
// handlers: each adds its own context (thread pool; stream + scratch) in
// front. It must match what fused_focal_xla.cc emits.
#ifndef FUSEDFOCAL_KERNELS_FOCAL_FFI_BINDING_H_
#define FUSEDFOCAL_KERNELS_FOCAL_FFI_BINDING_H_

#include <utility>

#include "xla/ffi/api/ffi.h"

namespace fusedfocal {

template <typename Binding>
auto FocalLossBinding(Binding&& binding) {
  namespace ffi = ::xla::ffi;
  return std::forward<Binding>(binding).template Arg<ffi::AnyBuffer>()  // logits [n]
      .template Arg<ffi::Buffer<ffi::F32>>()            // labels [n]
      .template Arg<ffi::Buffer<ffi::F32>>()            // alpha [0 | 1 | C]
      .template Arg<ffi::Buffer<ffi::F32>>()            // weights [0 | n]
      .template Ret<ffi::Buffer<ffi::F32>>()            // loss [n] or []
      .template Ret<ffi::AnyBuffer>()                   // grad [n], logits dtype
      .template Attr<float>("gamma")
      .template Attr<float>("label_smoothing")
      .template Attr<int32_t>("reduction")              // 0 none, 1 sum, 2 mean
      .template Attr<int64_t>("classes");               // C, for a per-class alpha
}

}  // namespace fusedfocal

#endif  // FUSEDFOCAL_KERNELS_FOCAL_FFI_BINDING_H_
