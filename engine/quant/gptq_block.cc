#include "quant/gptq_block.h"

#include "quant/qparams.h"

namespace engine {

void gptq_block(float* w, int64_t rows, int64_t b, int64_t ldw, const float* u, int64_t ldu, const float* scale,
                float* q, float* err) {
  for (int64_t r = 0; r < rows; ++r) {
    float* wr = w + r * ldw;
    float* qr = q + r * b;
    float* er = err + r * b;
    const float s = scale[r];
    for (int64_t i = 0; i < b; ++i) {
      const float level = static_cast<float>(quantize_level(wr[i], s));
      const float e = (wr[i] - level * s) / u[i * ldu + i];
      qr[i] = level;
      er[i] = e;
      const float* ui = u + i * ldu;
      for (int64_t t = i + 1; t < b; ++t) wr[t] -= e * ui[t];
    }
  }
}

}  // namespace engine
