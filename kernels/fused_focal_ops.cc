// Registration of the FusedFocalLossGrad op and its shape function.
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace fusedfocal {

using ::tensorflow::Status;
using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

REGISTER_OP("FusedFocalLossGrad")
    .Input("logits: T")
    .Input("labels: float")
    .Input("alpha: float")
    .Input("weights: num_weights * float")
    .Output("loss: float")
    .Output("grad: T")
    .Attr("T: {half, bfloat16, float}")
    .Attr("gamma: float = 2.0")
    .Attr("label_smoothing: float = 0.0")
    .Attr("reduction: {'none', 'sum', 'mean'} = 'none'")
    .Attr("num_weights: int >= 0 = 0")
    .SetShapeFn([](InferenceContext* c) -> Status {
      ShapeHandle logits;
      TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(0), 1, &logits));
      TF_RETURN_IF_ERROR(c->Merge(logits, c->input(1), &logits));
      ShapeHandle alpha;
      TF_RETURN_IF_ERROR(c->WithRankAtMost(c->input(2), 1, &alpha));
      if (c->RankKnown(alpha) && c->Rank(alpha) == 1 && c->RankKnown(logits)) {
        DimensionHandle a = c->Dim(alpha, 0);
        DimensionHandle classes = c->Dim(logits, -1);
        if (c->ValueKnown(a) && c->ValueKnown(classes)) {
          const int64_t k = c->Value(a);
          if (k != 0 && k != 1 && k != c->Value(classes)) {
            return ::tensorflow::errors::InvalidArgument(
                "FusedFocalLossGrad: alpha must have 0 (no weighting), 1 or C=", c->Value(classes),
                " entries; got ", k);
          }
        }
      }
      int num_weights = 0;
      TF_RETURN_IF_ERROR(c->GetAttr("num_weights", &num_weights));
      if (num_weights > 1) {
        return ::tensorflow::errors::InvalidArgument(
            "FusedFocalLossGrad: at most one weights tensor, got ", num_weights);
      }
      if (num_weights == 1) TF_RETURN_IF_ERROR(c->Merge(logits, c->input(3), &logits));
      std::string reduction;
      TF_RETURN_IF_ERROR(c->GetAttr("reduction", &reduction));
      c->set_output(0, reduction == "none" ? logits : c->Scalar());
      c->set_output(1, logits);
      return Status();
    })
    .Doc(R"doc(
Fused sigmoid focal loss and its gradient with respect to logits, in one pass.

logits: [..., C] float16, bfloat16 or float32.
labels: float32, same shape as logits, values in [0, 1].
alpha: float32 of shape [0] (no class weighting), [] or [1] (weight of
  positives) or [C] (per class).
loss: float32; shaped like logits for reduction "none", else a scalar (sum,
  or mean with mean of an empty tensor = 0).
grad: d loss / d logits in the logits dtype (computed in float32, rounded
  once; for "mean" already divided by the element count).
weights: empty (num_weights = 0, the default: graphs saved before weights
  existed load unchanged) or one float32 tensor shaped like logits that
  multiplies every element's loss and gradient (Keras sample weights).
)doc");

}  // namespace fusedfocal
