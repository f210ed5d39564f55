// XLA FFI handler of the fused focal loss on the host (XLA:CPU).
//
// The XLA lowering of FusedFocalLossGrad (fused_focal_xla.cc) emits a typed
// FFI custom call to "fusedfocal_focal_loss"; this handler runs it with the
// same one-pass CPU driver as the TensorFlow kernel (focal_cpu_driver.h),
// spread over XLA's intra-op thread pool. It lives in a translation unit of
// its own: xla/ffi/api/ffi.h (the stable, header-only API) refuses to share
// one with XLA's internal ffi.h, which TensorFlow's headers pull in.
//
// Operands (all flattened to rank 1 by the lowering, so layouts are trivial):
//   logits  [n]  f32 | f16 | bf16
//   labels  [n]  f32
//   alpha   [0] | [1] | [C]  f32
//   weights [0] | [n]  f32
// Results: loss ([n] for reduction none, else []) f32, grad [n] (logits dtype).
// Attributes: gamma, label_smoothing (f32), reduction (i32: 0 none, 1 sum,
// 2 mean), classes (i64: C, for a per-class alpha).
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "focal_cpu_driver.h"
#include "focal_ffi_binding.h"
#include "xla/ffi/api/ffi.h"

namespace fusedfocal {
namespace {

namespace ffi = ::xla::ffi;

// What every worker shares; held by shared_ptr because a task the pool starts
// only after the call has returned must still find it alive (it then sees no
// block left and exits without touching the buffers).
struct Shared {
  explicit Shared(CpuPlan* p) : plan(p) {}
  CpuPlan* plan;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  std::mutex mu;
  std::condition_variable cv;
};

// Claims blocks until none is left. Returns after this thread's last block.
void Drain(const std::shared_ptr<Shared>& s, int64_t blocks) {
  int64_t finished = 0;
  for (int64_t b = s->next.fetch_add(1); b < blocks; b = s->next.fetch_add(1)) {
    s->plan->Run(b, b + 1);
    ++finished;
  }
  if (finished && s->done.fetch_add(finished) + finished == blocks) {
    std::lock_guard<std::mutex> lock(s->mu);
    s->cv.notify_all();
  }
}

// Runs every block of `plan`: the calling thread works too, so the call
// never waits on a task the pool has not started (no deadlock when the pool
// is busy or has a single thread), and waits only for blocks in progress.
void ParallelRun(ffi::ThreadPool& pool, CpuPlan& plan) {
  const int64_t blocks = plan.blocks();
  if (blocks == 0) return;
  // Small inputs stay on the caller: a task costs more than a few blocks.
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), blocks / 2);
  if (helpers <= 0) {
    plan.Run(0, blocks);
    return;
  }
  auto shared = std::make_shared<Shared>(&plan);
  for (int64_t t = 0; t < helpers; ++t) {
    pool.Schedule([shared, blocks] { Drain(shared, blocks); });
  }
  Drain(shared, blocks);
  std::unique_lock<std::mutex> lock(shared->mu);
  shared->cv.wait(lock, [&] { return shared->done.load() == blocks; });
}

int DtypeCode(ffi::DataType t) {
  switch (t) {
    case ffi::DataType::F32: return FF_FLOAT32;
    case ffi::DataType::F16: return FF_FLOAT16;
    case ffi::DataType::BF16: return FF_BFLOAT16;
    default: return -1;
  }
}

ffi::Error FocalLossImpl(ffi::ThreadPool pool, ffi::AnyBuffer logits,
                         ffi::Buffer<ffi::F32> labels, ffi::Buffer<ffi::F32> alpha,
                         ffi::Buffer<ffi::F32> weights, ffi::Result<ffi::Buffer<ffi::F32>> loss,
                         ffi::Result<ffi::AnyBuffer> grad, float gamma, float label_smoothing,
                         int32_t reduction, int64_t classes) {
  const int dtype = DtypeCode(logits.element_type());
  if (dtype < 0 || grad->element_type() != logits.element_type()) {
    return ffi::Error::InvalidArgument(
        "fusedfocal_focal_loss: logits and grad must both be f32, f16 or bf16");
  }
  const int64_t n = static_cast<int64_t>(logits.element_count());
  if (static_cast<int64_t>(labels.element_count()) != n ||
      static_cast<int64_t>(grad->element_count()) != n) {
    return ffi::Error::InvalidArgument("fusedfocal_focal_loss: labels and grad must have " +
                                       std::to_string(n) + " elements like logits");
  }
  const int64_t na = static_cast<int64_t>(alpha.element_count());
  if (na > 1 && na != classes) {
    return ffi::Error::InvalidArgument("fusedfocal_focal_loss: alpha must have 0, 1 or C=" +
                                       std::to_string(classes) + " entries; got " +
                                       std::to_string(na));
  }
  const int64_t nw = static_cast<int64_t>(weights.element_count());
  if (nw != 0 && nw != n) {
    return ffi::Error::InvalidArgument("fusedfocal_focal_loss: weights must have 0 or " +
                                       std::to_string(n) + " elements; got " + std::to_string(nw));
  }
  if (reduction < kReduceNone || reduction > kReduceMean) {
    return ffi::Error::InvalidArgument("fusedfocal_focal_loss: reduction must be 0, 1 or 2; got " +
                                       std::to_string(reduction));
  }
  if (!(gamma >= 0.0f && gamma <= 1e30f) || !(label_smoothing >= 0.0f && label_smoothing < 1.0f)) {
    return ffi::Error::InvalidArgument(
        "fusedfocal_focal_loss: gamma must be finite >= 0 and label_smoothing in [0, 1)");
  }
  const int64_t expect_loss = reduction == kReduceNone ? n : 1;
  if (static_cast<int64_t>(loss->element_count()) != expect_loss) {
    return ffi::Error::InvalidArgument("fusedfocal_focal_loss: loss must have " +
                                       std::to_string(expect_loss) + " elements");
  }
  CpuPlan plan(dtype, logits.untyped_data(), labels.typed_data(),
               nw ? weights.typed_data() : nullptr, alpha.typed_data(), na, n, classes, gamma,
               label_smoothing, reduction, reduction == kReduceNone ? loss->typed_data() : nullptr,
               grad->untyped_data());
  ParallelRun(pool, plan);
  if (reduction != kReduceNone) loss->typed_data()[0] = plan.Total();
  return ffi::Error::Success();
}

}  // namespace
}  // namespace fusedfocal

// Exported as a C symbol too, so any XLA front end can bind it (JAX:
// jax.ffi.register_ffi_target("fusedfocal_focal_loss",
// jax.ffi.pycapsule(lib.fusedfocal_focal_loss_host), platform="cpu")).
XLA_FFI_DEFINE_HANDLER_SYMBOL(fusedfocal_focal_loss_host, fusedfocal::FocalLossImpl,
                              fusedfocal::FocalLossBinding(
                                  xla::ffi::Ffi::Bind().Ctx<xla::ffi::ThreadPool>()));

#if FUSEDFOCAL_TF_REGISTER
// Registered with the XLA inside TensorFlow when the op library is loaded.
XLA_FFI_REGISTER_HANDLER(XLA_FFI_GetApi(), "fusedfocal_focal_loss", "Host",
                         fusedfocal_focal_loss_host);
#endif
