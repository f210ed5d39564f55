// TensorFlow kernels of FusedFocalLossGrad: CPU (always) and GPU (GOOGLE_CUDA).
//
// The CPU kernel shards the flattened tensor into fixed blocks over the
// intra-op thread pool; each block calls the compute library for the widest
// instruction set this CPU supports (focal_cpu.h) and writes its loss sum to
// its own slot, and the slots are added in order, so results do not depend
// on the number of threads.
#include <string.h>

#include <algorithm>

#include "focal_attrs.h"
#include "focal_cpu_driver.h"
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

template <typename T> struct DtypeCode;
template <> struct DtypeCode<float> { static constexpr int value = FF_FLOAT32; };
template <> struct DtypeCode<Eigen::half> { static constexpr int value = FF_FLOAT16; };
template <> struct DtypeCode<Eigen::bfloat16> { static constexpr int value = FF_BFLOAT16; };

}  // namespace

// Attribute and input checks shared by the CPU and GPU kernels.
class FusedFocalBase : public OpKernel {
 public:
  explicit FusedFocalBase(OpKernelConstruction* ctx) : OpKernel(ctx) {
    FocalAttrs a;
    OP_REQUIRES_OK(ctx, ReadFocalAttrs(ctx, &a));
    gamma_ = a.gamma;
    label_smoothing_ = a.label_smoothing;
    reduction_ = a.reduction;
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
    if (ctx->num_inputs() > 3 && ctx->input(3).shape() != logits.shape()) {
      ctx->SetStatus(errors::InvalidArgument("weights must have the shape of logits ",
                                             logits.shape().DebugString(), ", got ",
                                             ctx->input(3).shape().DebugString()));
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
    const float* weights = ctx->num_inputs() > 3 ? ctx->input(3).flat<float>().data() : nullptr;
    CpuPlan plan(DtypeCode<T>::value, logits.flat<T>().data(), ctx->input(1).flat<float>().data(),
                 weights, alpha.flat<float>().data(), alpha.NumElements(), logits.NumElements(),
                 classes, gamma_, label_smoothing_, reduction_,
                 reduction_ == kReduceNone ? loss->flat<float>().data() : nullptr,
                 grad->flat<T>().data());
    ctx->device()->tensorflow_cpu_worker_threads()->workers->ParallelFor(
        plan.blocks(), plan.block_cost(), [&plan](int64_t b0, int64_t b1) { plan.Run(b0, b1); });
    if (reduction_ != kReduceNone) loss->scalar<float>()() = plan.Total();
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
    args.weights = ctx->num_inputs() > 3 ? ctx->input(3).flat<float>().data() : nullptr;
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
