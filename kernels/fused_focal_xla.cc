// XLA lowering of FusedFocalLossGrad: one typed-FFI custom call.
//
// Inside tf.function(jit_compile=True) and Keras compile(jit_compile=True)
// TensorFlow translates each op to HLO through its XlaOpKernel. This one
// emits a single custom call to "fusedfocal_focal_loss" (the handler is in
// focal_ffi_cpu.cc for the host, focal_ffi_cuda.cu for CUDA), so the loss
// and its gradient still come from one pass over memory, inside XLA.
//
// Operands are flattened to rank 1 (a bitcast for XLA's default layouts), so
// the handler never has to reason about layouts; the results are reshaped
// back. Attributes travel as an MLIR dictionary in backend_config; floats as
// their bit patterns (hex), so gamma reaches the handler bit for bit.
//
// Registered with REGISTER_KERNEL_BUILDER on the XLA JIT devices (not
// REGISTER_XLA_OP, whose registry is read once, at the first XLA compile of
// the process: a library loaded after that would be ignored). The GPU
// registration exists only in builds that have the CUDA handler
// (FUSEDFOCAL_XLA_CUDA); otherwise a GPU machine would fail to compile.
#include <string.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "focal_attrs.h"
#include "tensorflow/compiler/tf2xla/xla_op_kernel.h"
#include "tensorflow/compiler/tf2xla/xla_op_registry.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "xla/hlo/builder/xla_builder.h"
#include "xla/shape_util.h"

namespace fusedfocal {

namespace errors = ::tensorflow::errors;

// The custom-call target: the FFI handlers register under this name, and it
// is what the HLO (and a profile of it) shows.
constexpr char kTarget[] = "fusedfocal_focal_loss";

class FusedFocalXlaOp : public ::tensorflow::XlaOpKernel {
 public:
  explicit FusedFocalXlaOp(::tensorflow::OpKernelConstruction* ctx) : XlaOpKernel(ctx) {
    FocalAttrs a;
    OP_REQUIRES_OK(ctx, ReadFocalAttrs(ctx, &a));
    gamma_ = a.gamma;
    label_smoothing_ = a.label_smoothing;
    reduction_ = a.reduction;
    num_weights_ = a.num_weights;
  }

  void Compile(::tensorflow::XlaOpKernelContext* ctx) override {
    auto logits_shape = ctx->InputXlaShape(0);
    OP_REQUIRES_OK(ctx, logits_shape.status());
    const xla::Shape& xs = *logits_shape;
    OP_REQUIRES(ctx, xs.is_static() && xs.dimensions().size() >= 1,
                errors::InvalidArgument("FusedFocalLossGrad under XLA needs static logits of "
                                        "rank >= 1, got ", xs.ToString()));
    std::vector<int64_t> dims(xs.dimensions().begin(), xs.dimensions().end());
    int64_t n = 1;
    for (int64_t d : dims) n *= d;
    const int64_t classes = dims.back();

    auto check_same = [&](int index, const char* what) {
      auto s = ctx->InputXlaShape(index);
      OP_REQUIRES_OK(ctx, s.status());
      OP_REQUIRES(ctx, xla::ShapeUtil::SameDimensions(*s, xs),
                  errors::InvalidArgument(what, " must have the shape of logits ", xs.ToString(),
                                          ", got ", s->ToString()));
    };
    check_same(1, "labels");
    if (!ctx->status().ok()) return;
    if (num_weights_ == 1) {
      check_same(3, "weights");
      if (!ctx->status().ok()) return;
    }
    auto alpha_shape = ctx->InputXlaShape(2);
    OP_REQUIRES_OK(ctx, alpha_shape.status());
    const int64_t na = xla::ShapeUtil::ElementsIn(*alpha_shape);
    OP_REQUIRES(ctx, alpha_shape->dimensions().size() <= 1 && (na <= 1 || na == classes),
                errors::InvalidArgument("alpha must be of shape [0], [], [1] or [C] with C=",
                                        classes, ", got ", alpha_shape->ToString()));

    xla::XlaBuilder* b = ctx->builder();
    const xla::XlaOp x = xla::Reshape(ctx->Input(0), {n});
    const xla::XlaOp y = xla::Reshape(ctx->Input(1), {n});
    const xla::XlaOp a = xla::Reshape(ctx->Input(2), {na});
    const xla::XlaOp w = num_weights_ == 1 ? xla::Reshape(ctx->Input(3), {n})
                                           : xla::ConstantR1<float>(b, {});
    const xla::PrimitiveType t = xs.element_type();
    const xla::Shape loss_shape = reduction_ == 0 ? xla::ShapeUtil::MakeShape(xla::F32, {n})
                                                  : xla::ShapeUtil::MakeShape(xla::F32, {});
    const xla::Shape out = xla::ShapeUtil::MakeTupleShape(
        {loss_shape, xla::ShapeUtil::MakeShape(t, {n})});
    const xla::XlaOp call = xla::CustomCall(
        b, kTarget, {x, y, a, w}, out, BackendConfig(classes), /*has_side_effect=*/false,
        /*output_operand_aliasing=*/{}, /*literal=*/nullptr, xla::CustomCallSchedule::SCHEDULE_NONE,
        xla::CustomCallApiVersion::API_VERSION_TYPED_FFI);
    xla::XlaOp loss = xla::GetTupleElement(call, 0);
    if (reduction_ == 0) loss = xla::Reshape(loss, dims);
    ctx->SetOutput(0, loss);
    ctx->SetOutput(1, xla::Reshape(xla::GetTupleElement(call, 1), dims));
  }

 private:
  static std::string HexF32(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof(bits));
    return absl::StrFormat("0x%08X : f32", bits);
  }

  std::string BackendConfig(int64_t classes) const {
    return absl::StrFormat("{gamma = %s, label_smoothing = %s, reduction = %d : i32, classes = %d : i64}",
                           HexF32(gamma_), HexF32(label_smoothing_), reduction_, classes);
  }

  float gamma_ = 2.0f;
  float label_smoothing_ = 0.0f;
  int reduction_ = 0;
  int num_weights_ = 0;
};

using ::tensorflow::register_kernel::Name;
const ::tensorflow::DataType kTypes[] = {::tensorflow::DT_FLOAT, ::tensorflow::DT_HALF,
                                         ::tensorflow::DT_BFLOAT16};
REGISTER_KERNEL_BUILDER(
    Name("FusedFocalLossGrad").Device(::tensorflow::DEVICE_CPU_XLA_JIT).TypeConstraint("T", kTypes),
    FusedFocalXlaOp);
#if FUSEDFOCAL_XLA_CUDA
REGISTER_KERNEL_BUILDER(
    Name("FusedFocalLossGrad").Device(::tensorflow::DEVICE_GPU_XLA_JIT).TypeConstraint("T", kTypes),
    FusedFocalXlaOp);
#endif

}  // namespace fusedfocal
