// Shape inference for Preprocess (ir/preprocess.h): uint8 frames
// [N, H, W, 3] or [N, T, H, W, 3] -> float32 [N, 3, h, w] or [N, 3, T, h, w].
// H and W may be unknown (-1) statically; at run time a frame too small for
// the crop fails here, naming the frames input.
#include "ir/infer.h"
#include "ir/preprocess.h"

namespace engine {
namespace {

void infer_preprocess(InferContext& ctx) {
  const Node& n = ctx.node();
  const PreprocessSpec s = preprocess_spec(n);
  const ValueInfo& x = ctx.input(0);
  const std::string what = str_cat(n.describe(), ": input '", n.input(0)->name(), "'");
  ValueInfo out;
  out.dtype = DType::kFloat32;
  if (x.dtype != DType::kUndefined && x.dtype != DType::kUInt8)
    fail(ErrorKind::kDType, what, " must be uint8 frames, got ", dtype_name(x.dtype));
  if (!x.has_shape) {
    ctx.output(0) = out;
    return;
  }
  const FrameDims f = frame_dims(s, x.shape, what);
  const int64_t h = f.h, w = f.w;
  int64_t oh = -1, ow = -1;
  if (h >= 0 && w >= 0) {
    const PreprocessGeometry g = preprocess_geometry(s, h, w, what);
    oh = g.out_h;
    ow = g.out_w;
  } else if (s.crop_h > 0) {
    oh = s.crop_h;
    ow = s.crop_w;
  } else if (s.resize == PreprocessSpec::Resize::kExact) {
    oh = s.size_h;
    ow = s.size_w;
  } else if (s.resize == PreprocessSpec::Resize::kNone) {
    oh = h;
    ow = w;
  }
  out.has_shape = true;
  out.shape = s.video ? Shape{x.shape[0], 3, x.shape[1], oh, ow} : Shape{x.shape[0], 3, oh, ow};
  ctx.output(0) = out;
}

}  // namespace

void register_preprocess_infer(InferRegistry& r) { r.add(OpKind::kPreprocess, infer_preprocess); }

}  // namespace engine
