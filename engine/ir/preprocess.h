// Preprocess: camera frames to a model input, as the plan's first op.
//
//   frames uint8 [N, H, W, 3]      (layout "NCHW")  or
//          uint8 [N, T, H, W, 3]   (layout "NCTHW": clips of T frames);
//          NV12 (color "nv12"): [N, H * 3 / 2, W] or [N, T, H * 3 / 2, W],
//          the Y plane's H rows then H / 2 rows of interleaved U, V
//          (H and W even)
//   -> x float32 [N, 3, h, w]  or  [N, 3, T, h, w]
//
// Per image: swap BGR to RGB (color "bgr"); resize to (RH, RW); take the
// centre crop (h, w); x = (v / 255 - mean[c]) / std[c] with mean and std in
// 0-1 units (torchvision's Normalize after ToTensor). H and W may change from
// run to run; h and w are fixed by the attributes unless the op resizes the
// shorter side without a crop (then they follow the frame's aspect ratio).
//
// Attributes (all written by pyengine.Preprocess, pyengine/preprocess.py):
//   color          "rgb" | "bgr" (the frames' channel order) | "nv12": YUV 4:2:0
//                  converted per pixel with BT.601 limited-range coefficients
//                  in 20-bit fixed point (chroma of each 2x2 block shared),
//                  R = sat((1220542 * max(Y - 16, 0) + 1673527 * V' + 2^19) >> 20),
//                  G = sat((1220542 * max(Y - 16, 0) - 852492 * V' - 409993 * U' + 2^19) >> 20),
//                  B = sat((1220542 * max(Y - 16, 0) + 2116026 * U' + 2^19) >> 20),
//                  U' = U - 128, V' = V - 128 (OpenCV's COLOR_YUV2RGB_NV12),
//                  then resampled as RGB
//   resize_mode    "none" | "exact" | "shorter"
//   size           ints: [h, w] (exact) or [s] (shorter side; the longer is
//                  floor(s * long / short), as torchvision's Resize(int))
//   interpolation  "bilinear" | "nearest"
//   antialias      int 0/1: bilinear downscaling widens the triangle filter
//                  to the scale (Pillow's BILINEAR, torchvision antialias=True)
//   crop           ints: [] or [h, w]; top = round_half_even((RH - h) / 2),
//                  as torchvision's CenterCrop; larger than the resized frame
//                  is a ShapeError
//   mean, std      floats: 3 values (RGB order), 0-1 units
//   layout         "NCHW" | "NCTHW"
//
// Resampling conventions (per axis; L input pixels resized to R, o an index
// into the resized axis, scale = L / R):
//   bilinear       half-pixel centres: src = (o + 0.5) * scale - 0.5, clamped
//                  to [0, L - 1], two taps (torch align_corners=False,
//                  OpenCV INTER_LINEAR)
//   antialias      centre c = (o + 0.5) * scale, support = max(scale, 1),
//                  taps x in [floor(c - support + 0.5), floor(c + support + 0.5))
//                  clipped to the image, weight max(0, 1 - |x + 0.5 - c| / max(scale, 1)),
//                  normalized to sum 1 (Pillow's precompute_coeffs); for
//                  upscaling it equals bilinear
//   nearest        src = floor((o + 0.5) * scale) (exact integer arithmetic),
//                  clamped (Pillow's NEAREST, torch "nearest-exact")
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ir/graph.h"

namespace engine {

struct PreprocessSpec {
  bool bgr = false;
  bool nv12 = false;
  enum class Resize { kNone, kExact, kShorter } resize = Resize::kNone;
  int64_t size_h = 0, size_w = 0;  // exact: both; shorter: size_h
  bool nearest = false;
  bool antialias = false;
  int64_t crop_h = 0, crop_w = 0;  // 0: no crop
  float mean[3] = {0, 0, 0};
  float std[3] = {1, 1, 1};
  bool video = false;              // layout NCTHW
};

// Reads and validates the node's attributes; throws kInvalidModel naming the
// node for a missing or malformed one.
PreprocessSpec preprocess_spec(const Node& node);

// A frames tensor's frame height and width (-1 where the shape leaves them
// unknown). Throws kShape (message prefixed by `what`) for a wrong rank or
// channel count, or NV12 frames whose H or W is odd.
struct FrameDims {
  int64_t h = -1, w = -1;
};
FrameDims frame_dims(const PreprocessSpec& s, const Shape& frames, const std::string& what);

// Where one frame of H x W lands: the resized size, the crop's offset in it,
// and the output size.
struct PreprocessGeometry {
  int64_t resized_h = 0, resized_w = 0;
  int64_t top = 0, left = 0;
  int64_t out_h = 0, out_w = 0;
};

// Throws kShape (message prefixed by `what`) when a frame of h x w is too
// small for the crop after resizing, or resizes to nothing.
PreprocessGeometry preprocess_geometry(const PreprocessSpec& s, int64_t h, int64_t w, const std::string& what);

// Rewrites `g` so that the graph input `input` (float32 [N, 3, h, w], or
// [N, 3, T, h, w] for layout NCTHW) is computed by a Preprocess node from a
// new uint8 frames input that takes over the input's name and place. Checks
// the op's output shape against the input's (kShape naming the input) and
// the input's dtype (kDType). Returns the new node.
Node* insert_preprocess(Graph& g, const std::string& input, Attributes attrs);

}  // namespace engine
