// TensorFlow kernels of FusedFocalLossGrad: CPU (always) and GPU (GOOGLE_CUDA).
//
// The CPU kernel shards the flattened tensor into fixed blocks over the
// intra-op thread pool; each block calls the compute library for the widest
// instruction set this CPU supports (focal_cpu.h) and writes its loss sum to
// its own slot, and the slots are added in order, so results do not depend
// on the number of threads.
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <vector>

#include "focal_cpu.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tensorflow/core/util/work_sharder.h"

#if GOOGLE_CUDA
#include "focal_cuda.h"
#endif

namespace fusedfocal {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
namespace errors = ::tensorflow::errors;

namespace {

constexpr int64_t kBlock = 16384;  // elements per shard unit (64 KiB of float32)

template <typename T> struct DtypeCode;
template <> struct DtypeCode<float> { static constexpr int value = FF_FLOAT32; };
template <> struct DtypeCode<Eigen::half> { static constexpr int value = FF_FLOAT16; };
template <> struct DtypeCode<Eigen::bfloat16> { static constexpr int value = FF_BFLOAT16; };

// The widest supported instruction set, lowered by FUSEDFOCAL_CPU_ISA
// (avx512 | avx2 | sse2), which tests use to cover every variant.
FusedFocalCpuFn SelectCpuFn() {
  __builtin_cpu_init();
  int level = 0;
  if (__builtin_cpu_supports("x86-64-v3")) level = 1;
  if (__builtin_cpu_supports("x86-64-v4")) level = 2;
  if (const char* env = getenv("FUSEDFOCAL_CPU_ISA")) {
    if (strcmp(env, "sse2") == 0) level = 0;
    else if (strcmp(env, "avx2") == 0) level = std::min(level, 1);
  }
  return level == 2 ? fusedfocal_cpu_avx512 : level == 1 ? fusedfocal_cpu_avx2 : fusedfocal_cpu_sse2;
}

}  // namespace

// Attribute and input checks shared by the CPU and GPU kernels.
class FusedFocalBase : public OpKernel {
 public:
  explicit FusedFocalBase(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("gamma", &gamma_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("label_smoothing", &label_smoothing_));
    std::string reduction;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("reduction", &reduction));
    reduction_ = reduction == "none" ? 0 : reduction == "sum" ? 1 : 2;
    OP_REQUIRES(ctx, gamma_ >= 0.0f && gamma_ <= 1e30f,
                errors::InvalidArgument("gamma must be a finite float >= 0, got ", gamma_));
    OP_REQUIRES(ctx, label_smoothing_ >= 0.0f && label_smoothing_ < 1.0f,
                errors::InvalidArgument("label_smoothing must be in [0, 1), got ", label_smoothing_));
  }

 protected:
  // Validates the inputs and allocates the outputs; false on error.
  bool Prepare(OpKernelContext* ctx, Tensor** loss, Tensor** grad, int64_t* classes,
               int* alpha_mode) {
    const Tensor& logits = ctx->input(0);
    const Tensor& labels = ctx->input(1);
    const Tensor& alpha = ctx->input(2);
    if (logits.dims() < 1) {
      ctx->SetStatus(errors::InvalidArgument("logits must have rank >= 1, got shape ",
                                             logits.shape().DebugString()));
      return false;
    }
    if (labels.shape() != logits.shape()) {
      ctx->SetStatus(errors::InvalidArgument("labels must have the shape of logits ",
                                             logits.shape().DebugString(), ", got ",
                                             labels.shape().DebugString()));
      return false;
    }
    *classes = logits.dim_size(logits.dims() - 1);
    if (alpha.dims() > 1 || (alpha.NumElements() > 1 && alpha.NumElements() != *classes)) {
      ctx->SetStatus(errors::InvalidArgument("alpha must be of shape [0], [], [1] or [C] with C=",
                                             *classes, ", got ", alpha.shape().DebugString()));
      return false;
    }
    *alpha_mode = alpha.dims() == 1 && alpha.NumElements() == 0 ? FF_ALPHA_NONE
                  : alpha.NumElements() == 1                     ? FF_ALPHA_SCALAR
                                                                 : FF_ALPHA_VECTOR;
    const TensorShape loss_shape = reduction_ == 0 ? logits.shape() : TensorShape({});
    ::tensorflow::Status s = ctx->allocate_output(0, loss_shape, loss);
    // grad may take over the logits buffer when nothing else holds it: every
    // element is read before its gradient is written, in the same vector step.
    if (s.ok()) s = ctx->forward_input_or_allocate_output({0}, 1, logits.shape(), grad);
    if (!s.ok()) {
      ctx->SetStatus(s);
      return false;
    }
    return true;
  }

  float gamma_;
  float label_smoothing_;
  int reduction_;  // 0 none, 1 sum, 2 mean
};

template <typename T>
class FusedFocalCpuOp : public FusedFocalBase {
 public:
  using FusedFocalBase::FusedFocalBase;

  void Compute(OpKernelContext* ctx) override {
    Tensor* loss = nullptr;
    Tensor* grad = nullptr;
    int64_t classes = 0;
    int alpha_mode = 0;
    if (!Prepare(ctx, &loss, &grad, &classes, &alpha_mode)) return;
    const Tensor& logits = ctx->input(0);
    const Tensor& alpha = ctx->input(2);
    const int64_t n = logits.NumElements();

    FusedFocalCpuArgs args;
    memset(&args, 0, sizeof(args));
    args.dtype = DtypeCode<T>::value;
    args.logits = logits.flat<T>().data();
    args.labels = ctx->input(1).flat<float>().data();
    args.weights = nullptr;
    args.alpha_mode = alpha_mode;
    args.gamma = gamma_;
    args.label_smoothing = label_smoothing_;
    args.grad_scale = reduction_ == 2 && n > 0 ? static_cast<float>(1.0 / static_cast<double>(n)) : 1.0f;
    args.loss = reduction_ == 0 ? loss->flat<float>().data() : nullptr;
    args.grad = grad->flat<T>().data();

    // Blocks start at multiples of C, so a per-class alpha tiled over one
    // block lines up with every block.
    int64_t block = kBlock;
    std::vector<float> tiled;
    if (alpha_mode == FF_ALPHA_SCALAR) {
      args.alpha = alpha.flat<float>()(0);
    } else if (alpha_mode == FF_ALPHA_VECTOR) {
      block = std::max<int64_t>(1, kBlock / classes) * classes;
      const float* a = alpha.flat<float>().data();
      if (block == classes) {
        args.alpha_tiled = a;
      } else {
        tiled.resize(block);
        for (int64_t k = 0; k < block; ++k) tiled[k] = a[k % classes];
        args.alpha_tiled = tiled.data();
      }
      args.alpha_period = block;
    }

    const int64_t blocks = n == 0 ? 0 : (n + block - 1) / block;
    std::vector<double> partial(blocks, 0.0);
    const FusedFocalCpuFn fn = SelectCpuFn();
    auto work = [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        partial[b] = fn(&args, b * block, std::min(n, (b + 1) * block));
      }
    };
    // About 30 cycles per element (exp, log1p, a division, fp16 conversion).
    const int64_t cost = block * (gamma_ == static_cast<int>(gamma_) ? 30 : 50);
    ctx->device()->tensorflow_cpu_worker_threads()->workers->ParallelFor(blocks, cost, work);

    if (reduction_ != 0) {
      double total = 0.0;
      for (double p : partial) total += p;
      if (reduction_ == 2) total = n > 0 ? total / static_cast<double>(n) : 0.0;
      loss->scalar<float>()() = static_cast<float>(total);
    }
  }
};

#define REGISTER_CPU(T)                                                                \
  REGISTER_KERNEL_BUILDER(                                                             \
      Name("FusedFocalLossGrad").Device(DEVICE_CPU).TypeConstraint<T>("T"), FusedFocalCpuOp<T>)
REGISTER_CPU(float);
REGISTER_CPU(Eigen::half);
REGISTER_CPU(Eigen::bfloat16);
#undef REGISTER_CPU

#if GOOGLE_CUDA
// GPU kernel: the CUDA launcher of focal_cuda.cu on TensorFlow's stream.
// Compiled only by `build_kernels.py --cuda` (needs nvcc and a CUDA build of
// TensorFlow); NOT yet run on a GPU (see kernels/README.md).
template <typename T>
class FusedFocalGpuOp : public FusedFocalBase {
 public:
  using FusedFocalBase::FusedFocalBase;

  void Compute(OpKernelContext* ctx) override {
    Tensor* loss = nullptr;
    Tensor* grad = nullptr;
    int64_t classes = 0;
    int alpha_mode = 0;
    if (!Prepare(ctx, &loss, &grad, &classes, &alpha_mode)) return;
    const Tensor& logits = ctx->input(0);
    const Tensor& alpha = ctx->input(2);
    const int64_t n = logits.NumElements();
    Tensor workspace;
    const int64_t ws_bytes = static_cast<int64_t>(fusedfocal_cuda_workspace_bytes(n));
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(::tensorflow::DT_INT8,
                                           TensorShape({std::max<int64_t>(ws_bytes, 1)}),
                                           &workspace));
    FusedFocalCudaArgs args;
    memset(&args, 0, sizeof(args));
    args.dtype = DtypeCode<T>::value;
    args.n = n;
    args.classes = classes;
    args.logits = logits.flat<T>().data();
    args.labels = ctx->input(1).flat<float>().data();
    args.weights = nullptr;
    args.alpha_mode = alpha_mode;
    args.alpha = alpha.NumElements() ? alpha.flat<float>().data() : nullptr;
    args.gamma = gamma_;
    args.label_smoothing = label_smoothing_;
    args.reduction = reduction_;
    args.loss = loss->flat<float>().data();
    args.grad = grad->flat<T>().data();
    const int rc = fusedfocal_cuda_forward_backward(
        &args, workspace.flat<int8_t>().data(), static_cast<size_t>(ws_bytes),
        ctx->eigen_gpu_device().stream());
    OP_REQUIRES(ctx, rc == 0, errors::Internal("fusedfocal CUDA launch failed: ",
                                                fusedfocal_cuda_error_string(rc)));
  }
};

#define REGISTER_GPU(T)                                                                \
  REGISTER_KERNEL_BUILDER(                                                             \
      Name("FusedFocalLossGrad").Device(::tensorflow::DEVICE_GPU).TypeConstraint<T>("T"), \
      FusedFocalGpuOp<T>)
REGISTER_GPU(float);
REGISTER_GPU(Eigen::half);
REGISTER_GPU(Eigen::bfloat16);
#undef REGISTER_GPU
#endif  // GOOGLE_CUDA

}  // namespace fusedfocal
