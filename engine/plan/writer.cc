// Plan writer: see format.md for the layout this produces.
#include <cstring>
#include <fstream>
#include <unordered_map>

#include "plan/plan.h"

namespace engine {

uint64_t plan_checksum(const void* data, size_t size) {
  // Multiply-xor over 8-byte words: fast enough for hundreds of MB of weights
  // and sensitive to any flipped or missing byte.
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t h = 0x9E3779B97F4A7C15ull ^ (size * 0xff51afd7ed558ccdull);
  size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    h ^= w * 0x87c37b91114253d5ull;
    h = (h << 31 | h >> 33) * 0x4cf5ad432745937full;
  }
  uint64_t tail = 0;
  std::memcpy(&tail, p + i, size - i);
  h ^= tail * 0x87c37b91114253d5ull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 33;
  return h;
}

namespace {

class Out {
 public:
  void u8(uint8_t v) { buf_.push_back(static_cast<char>(v)); }
  void u32(uint32_t v) { raw(&v, 4); }
  void i32(int32_t v) { raw(&v, 4); }
  void u64(uint64_t v) { raw(&v, 8); }
  void i64(int64_t v) { raw(&v, 8); }
  void f32(float v) { raw(&v, 4); }
  void str(const std::string& s) { u32(static_cast<uint32_t>(s.size())); raw(s.data(), s.size()); }
  void raw(const void* p, size_t n) { buf_.append(static_cast<const char*>(p), n); }
  std::string& buf() { return buf_; }

 private:
  std::string buf_;
};

void write_tensor(Out& o, const Tensor& t) {
  o.i32(static_cast<int32_t>(t.dtype()));
  o.u32(static_cast<uint32_t>(t.rank()));
  for (int64_t d : t.shape()) o.i64(d);
  o.u64(t.nbytes());
  o.raw(t.raw(), t.nbytes());
}

void write_attr(Out& o, const Attribute& a) {
  o.u8(static_cast<uint8_t>(a.type));
  switch (a.type) {
    case Attribute::Type::kInt: o.i64(a.i); break;
    case Attribute::Type::kFloat: o.f32(a.f); break;
    case Attribute::Type::kString: o.str(a.s); break;
    case Attribute::Type::kInts: o.u32(static_cast<uint32_t>(a.ints.size())); for (auto v : a.ints) o.i64(v); break;
    case Attribute::Type::kFloats: o.u32(static_cast<uint32_t>(a.floats.size())); for (auto v : a.floats) o.f32(v); break;
    case Attribute::Type::kStrings: o.u32(static_cast<uint32_t>(a.strings.size())); for (auto& v : a.strings) o.str(v); break;
    case Attribute::Type::kTensor: write_tensor(o, *a.t); break;
  }
}

size_t align64(size_t n) { return (n + 63) / 64 * 64; }

}  // namespace

std::string write_plan(const Graph& g, const std::string& metadata_json, const std::string& engine_blob) {
  std::vector<Value*> values = g.values();
  std::unordered_map<const Value*, int32_t> index;
  for (size_t i = 0; i < values.size(); ++i) index[values[i]] = static_cast<int32_t>(i);

  // Weights are laid out first (offsets relative to the weights section).
  std::vector<std::pair<uint64_t, const Tensor*>> weights;
  uint64_t woff = 0;
  for (Value* v : values) {
    if (!v->is_constant()) continue;
    weights.push_back({woff, v->constant().get()});
    woff = align64(woff + v->constant()->nbytes());
  }

  Out gs;
  gs.u32(static_cast<uint32_t>(values.size()));
  size_t wi = 0;
  for (Value* v : values) {
    gs.str(v->name());
    gs.i32(static_cast<int32_t>(v->dtype()));
    uint8_t flags = (v->has_shape() ? 1 : 0) | (v->is_constant() ? 2 : 0) | (v->is_graph_input() ? 4 : 0) |
                    (v->is_graph_output() ? 8 : 0);
    gs.u8(flags);
    if (v->has_shape()) {
      gs.u32(static_cast<uint32_t>(v->shape().size()));
      for (int64_t d : v->shape()) gs.i64(d);
    }
    if (v->is_constant()) {
      gs.u64(weights[wi].first);
      gs.u64(weights[wi].second->nbytes());
      ++wi;
    }
  }
  gs.u32(static_cast<uint32_t>(g.inputs().size()));
  for (Value* v : g.inputs()) gs.u32(index[v]);
  gs.u32(static_cast<uint32_t>(g.outputs().size()));
  for (Value* v : g.outputs()) gs.u32(index[v]);
  gs.u32(static_cast<uint32_t>(g.nodes().size()));
  for (Node* n : g.nodes()) {
    gs.str(n->op_type());
    gs.str(n->domain());
    gs.str(n->name());
    gs.u32(static_cast<uint32_t>(n->num_inputs()));
    for (Value* v : n->inputs()) gs.i32(v ? index[v] : -1);
    gs.u32(static_cast<uint32_t>(n->num_outputs()));
    for (Value* v : n->outputs()) gs.i32(v ? index[v] : -1);
    gs.u32(static_cast<uint32_t>(n->attrs().size()));
    for (auto& kv : n->attrs()) {
      gs.str(kv.first);
      write_attr(gs, kv.second);
    }
    gs.u32(static_cast<uint32_t>(n->origin().size()));
    for (auto& s : n->origin()) gs.str(s);
  }
  gs.u32(static_cast<uint32_t>(g.metadata().size()));
  for (auto& kv : g.metadata()) {
    gs.str(kv.first);
    gs.str(kv.second);
  }

  const uint32_t nsec = engine_blob.empty() ? 3 : 4;
  size_t header = 24 + 32 * nsec + 8;
  size_t meta_off = header;
  size_t graph_off = meta_off + metadata_json.size();
  size_t weights_off = align64(graph_off + gs.buf().size());
  size_t engine_off = align64(weights_off + woff);
  std::string file(engine_blob.empty() ? weights_off + woff : engine_off + engine_blob.size(), '\0');
  if (!engine_blob.empty()) std::memcpy(&file[engine_off], engine_blob.data(), engine_blob.size());
  std::memcpy(&file[meta_off], metadata_json.data(), metadata_json.size());
  std::memcpy(&file[graph_off], gs.buf().data(), gs.buf().size());
  for (auto& w : weights)
    if (w.second->nbytes()) std::memcpy(&file[weights_off + w.first], w.second->raw(), w.second->nbytes());

  Out h;
  h.raw("PYENGPLN", 8);
  h.u32(kPlanFormatVersion);
  h.u32(0x01020304u);
  h.u32(nsec);
  h.u32(0);
  auto section = [&](uint32_t kind, size_t off, size_t size) {
    h.u32(kind);
    h.u32(0);
    h.u64(off);
    h.u64(size);
    h.u64(plan_checksum(file.data() + off, size));
  };
  section(1, meta_off, metadata_json.size());
  section(2, graph_off, gs.buf().size());
  section(3, weights_off, woff);
  if (!engine_blob.empty()) section(4, engine_off, engine_blob.size());
  h.u64(plan_checksum(h.buf().data(), h.buf().size()));
  ENGINE_CHECK(h.buf().size() == header);
  std::memcpy(&file[0], h.buf().data(), header);
  return file;
}

void save_plan(const Graph& g, const std::string& metadata_json, const std::string& path,
               const std::string& engine_blob) {
  std::string bytes = write_plan(g, metadata_json, engine_blob);
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  ENGINE_ENFORCE(f.good(), kPlanFormat, "cannot open '", path, "' for writing");
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ENGINE_ENFORCE(f.good(), kPlanFormat, "error writing plan '", path, "'");
}

}  // namespace engine
