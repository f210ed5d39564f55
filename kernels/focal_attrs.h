// The attributes of FusedFocalLossGrad, read and checked once for every
// front end that sees an OpKernelConstruction: the CPU/GPU kernels
// (fused_focal_kernel.cc) and the XLA lowering (fused_focal_xla.cc).
#ifndef FUSEDFOCAL_KERNELS_FOCAL_ATTRS_H_
#define FUSEDFOCAL_KERNELS_FOCAL_ATTRS_H_

#include <string>

#include "tensorflow/core/framework/op_kernel.h"

namespace fusedfocal {

struct FocalAttrs {
  float gamma = 2.0f;
  float label_smoothing = 0.0f;
  int reduction = 0;  // 0 none, 1 sum, 2 mean (focal_cpu_driver.h's Reduction)
  int num_weights = 0;
};

inline ::tensorflow::Status ReadFocalAttrs(::tensorflow::OpKernelConstruction* ctx, FocalAttrs* a) {
  namespace errors = ::tensorflow::errors;
  TF_RETURN_IF_ERROR(ctx->GetAttr("gamma", &a->gamma));
  TF_RETURN_IF_ERROR(ctx->GetAttr("label_smoothing", &a->label_smoothing));
  TF_RETURN_IF_ERROR(ctx->GetAttr("num_weights", &a->num_weights));
  std::string reduction;
  TF_RETURN_IF_ERROR(ctx->GetAttr("reduction", &reduction));
  a->reduction = reduction == "none" ? 0 : reduction == "sum" ? 1 : 2;
  if (!(a->gamma >= 0.0f && a->gamma <= 1e30f)) {
    return errors::InvalidArgument("gamma must be a finite float >= 0, got ", a->gamma);
  }
  if (!(a->label_smoothing >= 0.0f && a->label_smoothing < 1.0f)) {
    return errors::InvalidArgument("label_smoothing must be in [0, 1), got ", a->label_smoothing);
  }
  return ::tensorflow::Status();
}

}  // namespace fusedfocal

#endif  // FUSEDFOCAL_KERNELS_FOCAL_ATTRS_H_
