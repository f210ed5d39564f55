// XLA FFI handler of the fused focal loss on CUDA (XLA:GPU).
//
// The same custom call as focal_ffi_cpu.cc ("fusedfocal_focal_loss", same
// operands, results and attributes), for platform "CUDA": it enqueues the
// CUDA kernel of focal_cuda.cu on XLA's stream (PlatformStream) and returns
// without synchronising. The scratch for the deterministic partial sums comes
// from XLA's ScratchAllocator, never cudaMalloc. Host code only: it needs no
// CUDA header (the stream is passed through as an opaque pointer), so it
// builds with g++; the kernel itself is linked from focal_cuda.cu (nvcc).
//
// NOT yet run on a GPU: compile-checked only (kernels/README.md). Built into
// the TensorFlow library only with the CUDA kernel (build_kernels.py --cuda),
// where FUSEDFOCAL_TF_REGISTER registers it; JAX binds the exported symbol
// (benchmarks/gpu/check_cuda_ffi.py).
#include <cstdint>
#include <optional>
#include <string>

#include "focal_cuda.h"
#include "focal_ffi_binding.h"
#include "xla/ffi/api/ffi.h"

namespace fusedfocal {
namespace {

namespace ffi = ::xla::ffi;

int CudaDtype(ffi::DataType t) {
  switch (t) {
    case ffi::DataType::F32: return 0;
    case ffi::DataType::F16: return 1;
    case ffi::DataType::BF16: return 2;
    default: return -1;
  }
}

ffi::Error FocalLossCudaImpl(void* stream, ffi::ScratchAllocator scratch, ffi::AnyBuffer logits,
                             ffi::Buffer<ffi::F32> labels, ffi::Buffer<ffi::F32> alpha,
                             ffi::Buffer<ffi::F32> weights,
                             ffi::Result<ffi::Buffer<ffi::F32>> loss,
                             ffi::Result<ffi::AnyBuffer> grad, float gamma,
                             float label_smoothing, int32_t reduction, int64_t classes) {
  const int dtype = CudaDtype(logits.element_type());
  if (dtype < 0 || grad->element_type() != logits.element_type()) {
    return ffi::Error::InvalidArgument(
        "fusedfocal_focal_loss: logits and grad must both be f32, f16 or bf16");
  }
  const int64_t n = static_cast<int64_t>(logits.element_count());
  const int64_t na = static_cast<int64_t>(alpha.element_count());
  const int64_t nw = static_cast<int64_t>(weights.element_count());
  if (static_cast<int64_t>(labels.element_count()) != n || (nw != 0 && nw != n) ||
      (na > 1 && na != classes) || reduction < 0 || reduction > 2) {
    return ffi::Error::InvalidArgument(
        "fusedfocal_focal_loss: labels/weights must match logits (" + std::to_string(n) +
        " elements), alpha must have 0, 1 or C entries, reduction must be 0, 1 or 2");
  }
  FusedFocalCudaArgs args = {};
  args.dtype = dtype;
  args.n = n;
  args.classes = classes;
  args.logits = logits.untyped_data();
  args.labels = labels.typed_data();
  args.weights = nw ? weights.typed_data() : nullptr;
  args.alpha_mode = na == 0 ? 0 : na == 1 ? 1 : 2;
  args.alpha = na ? alpha.typed_data() : nullptr;
  args.gamma = gamma;
  args.label_smoothing = label_smoothing;
  args.reduction = reduction;
  args.loss = loss->typed_data();
  args.grad = grad->untyped_data();
  const size_t bytes = fusedfocal_cuda_workspace_bytes(n);
  void* workspace = nullptr;
  if (reduction != 0) {
    std::optional<void*> mem = scratch.Allocate(bytes, /*alignment=*/256);
    if (!mem.has_value()) {
      return ffi::Error::Internal("fusedfocal_focal_loss: XLA could not allocate " +
                                  std::to_string(bytes) + " bytes of scratch");
    }
    workspace = *mem;
  }
  const int rc = fusedfocal_cuda_forward_backward(&args, workspace, bytes, stream);
  if (rc != 0) {
    return ffi::Error::Internal(std::string("fusedfocal_focal_loss: CUDA launch failed: ") +
                                fusedfocal_cuda_error_string(rc));
  }
  return ffi::Error::Success();
}

}  // namespace
}  // namespace fusedfocal

XLA_FFI_DEFINE_HANDLER_SYMBOL(fusedfocal_focal_loss_cuda, fusedfocal::FocalLossCudaImpl,
                              fusedfocal::FocalLossBinding(
                                  xla::ffi::Ffi::Bind()
                                  .Ctx<xla::ffi::PlatformStream<void*>>()
                                  .Ctx<xla::ffi::ScratchAllocator>()));

#if FUSEDFOCAL_TF_REGISTER
XLA_FFI_REGISTER_HANDLER(XLA_FFI_GetApi(), "fusedfocal_focal_loss", "CUDA",
                         fusedfocal_focal_loss_cuda);
#endif
