// Plan reader: validates everything before trusting it (format.md). Every
// read is bounds-checked, so a corrupt or truncated file is a clear
// PlanFormatError, never a crash. The checksums only catch accidents: a file
// edited with its checksums recomputed must be caught by validation, so the
// graph goes through the same checks as an imported ONNX model (verify, then
// shape inference, which enforces each op's attribute and size limits), every
// string must be UTF-8 (names reach Python as str), and every failure, of any
// kind, is reported as kPlanFormat.
#include <algorithm>
#include <cstring>
#include <fstream>

#include "core/checked_math.h"
#include "ir/infer.h"
#include "passes/pass_manager.h"
#include "plan/plan.h"

namespace engine {
namespace {

// Strict UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF).
bool valid_utf8(const std::string& s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  for (size_t i = 0; i < n;) {
    const unsigned c = p[i];
    if (c < 0x80) { ++i; continue; }
    int len;
    unsigned cp;
    if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
    else return false;
    if (i + len > n) return false;
    for (int k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    static const unsigned kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

class In {
 public:
  In(const char* p, size_t n, const std::string& src) : p_(p), n_(n), src_(src) {}
  template <typename T>
  T get() {
    need(sizeof(T));
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string str() {
    uint32_t len = get<uint32_t>();
    need(len);
    std::string s(p_ + pos_, len);
    pos_ += len;
    if (!valid_utf8(s)) corrupt("a string is not valid UTF-8");
    return s;
  }
  uint32_t count(size_t min_item_bytes) {
    uint32_t c = get<uint32_t>();
    // A count larger than the bytes left is a corrupt file, not a big graph.
    if (static_cast<uint64_t>(c) * min_item_bytes > n_ - pos_) corrupt("a list length is larger than the file");
    return c;
  }
  size_t remaining() const { return n_ - pos_; }
  const char* take(size_t n) {
    need(n);
    const char* r = p_ + pos_;
    pos_ += n;
    return r;
  }
  [[noreturn]] void corrupt(const std::string& what) const {
    fail(ErrorKind::kPlanFormat, "plan '", src_, "' is corrupt: ", what);
  }

 private:
  void need(size_t k) const {
    if (k > n_ - pos_) corrupt("the graph section ends early");
  }
  const char* p_;
  size_t n_;
  size_t pos_ = 0;
  const std::string& src_;
};

std::shared_ptr<const Tensor> read_tensor(In& in) {
  int32_t dt = in.get<int32_t>();
  if (!dtype_is_valid(dt)) in.corrupt("unknown dtype code in an attribute tensor");
  uint32_t rank = in.count(8);
  Shape shape(rank);
  for (auto& d : shape) d = in.get<int64_t>();
  uint64_t bytes = in.get<uint64_t>();
  for (int64_t d : shape)
    if (d < 0) in.corrupt("negative dim in an attribute tensor");
  // Size checks before allocating: a forged shape must not cost memory.
  const int64_t want = checked_nbytes(shape, static_cast<DType>(dt));
  if (want < 0 || bytes != static_cast<uint64_t>(want)) in.corrupt("attribute tensor size does not match its shape");
  const char* src = in.take(bytes);
  auto t = std::make_shared<Tensor>(static_cast<DType>(dt), shape);
  std::memcpy(t->raw(), src, bytes);
  return t;
}

Attribute read_attr(In& in) {
  Attribute a;
  uint8_t type = in.get<uint8_t>();
  a.type = static_cast<Attribute::Type>(type);
  switch (a.type) {
    case Attribute::Type::kInt: a.i = in.get<int64_t>(); break;
    case Attribute::Type::kFloat: a.f = in.get<float>(); break;
    case Attribute::Type::kString: a.s = in.str(); break;
    case Attribute::Type::kInts: { uint32_t n = in.count(8); for (uint32_t i = 0; i < n; ++i) a.ints.push_back(in.get<int64_t>()); break; }
    case Attribute::Type::kFloats: { uint32_t n = in.count(4); for (uint32_t i = 0; i < n; ++i) a.floats.push_back(in.get<float>()); break; }
    case Attribute::Type::kStrings: { uint32_t n = in.count(4); for (uint32_t i = 0; i < n; ++i) a.strings.push_back(in.str()); break; }
    case Attribute::Type::kTensor: a.t = read_tensor(in); break;
    default: in.corrupt(str_cat("unknown attribute type ", int(type)));
  }
  return a;
}

std::unique_ptr<Graph> read_graph(const char* gsec, uint64_t gsize, char* wbase, uint64_t wsize,
                                  const std::shared_ptr<void>& data, const std::string& source);

}  // namespace

PlanContents read_plan(std::shared_ptr<void> data, size_t size, const std::string& source) {
  const char* p = static_cast<const char*>(data.get());
  auto bad = [&](const std::string& what) { fail(ErrorKind::kPlanFormat, "'", source, "' ", what); };
  if (size < 24 || std::memcmp(p, "PYENGPLN", 8) != 0)
    bad("is not a pyengine plan file (bad magic bytes)");
  uint32_t version, tag, nsec;
  std::memcpy(&version, p + 8, 4);
  std::memcpy(&tag, p + 12, 4);
  std::memcpy(&nsec, p + 16, 4);
  if (tag != 0x01020304u) bad("was written on a machine of the other byte order");
  if (version != kPlanFormatVersion)
    bad(str_cat("has plan format version ", version, ", but this pyengine reads version ", kPlanFormatVersion,
                ": rebuild the plan from the ONNX model with this pyengine"));
  if (nsec == 0 || nsec > 64) bad("is corrupt: bad section count");
  size_t header = 24 + 32 * static_cast<size_t>(nsec) + 8;
  if (size < header) bad("is truncated (header incomplete)");
  uint64_t hsum;
  std::memcpy(&hsum, p + header - 8, 8);
  if (hsum != plan_checksum(p, header - 8)) bad("is corrupt: header checksum mismatch");

  const char* sec[5] = {nullptr, nullptr, nullptr, nullptr, nullptr};
  uint64_t sec_size[5] = {0, 0, 0, 0, 0};
  uint64_t sec_off[5] = {0, 0, 0, 0, 0};
  for (uint32_t i = 0; i < nsec; ++i) {
    const char* e = p + 24 + 32 * i;
    uint32_t kind;
    uint64_t off, sz, sum;
    std::memcpy(&kind, e, 4);
    std::memcpy(&off, e + 8, 8);
    std::memcpy(&sz, e + 16, 8);
    std::memcpy(&sum, e + 24, 8);
    if (off > size || sz > size - off) bad("is truncated: a section lies past the end of the file");
    if (plan_checksum(p + off, sz) != sum) bad(str_cat("is corrupt: checksum mismatch in section ", kind));
    // Kinds 1-4 are known (4, the backend engine, is optional); others are
    // skipped so that a newer writer's extra sections do not break this reader.
    if (kind >= 1 && kind <= 4) { sec[kind] = p + off; sec_size[kind] = sz; sec_off[kind] = off; }
  }
  if (!sec[1] || !sec[2] || !sec[3]) bad("is corrupt: a required section is missing");

  PlanContents out;
  out.metadata_json.assign(sec[1], sec_size[1]);
  if (sec[4]) out.engine_blob.assign(sec[4], sec_size[4]);
  if (!valid_utf8(out.metadata_json)) bad("is corrupt: the metadata is not valid UTF-8");
  try {
    out.graph = read_graph(sec[2], sec_size[2], static_cast<char*>(data.get()) + sec_off[3], sec_size[3], data,
                           source);
  } catch (const Error& e) {
    if (e.kind() == ErrorKind::kPlanFormat) throw;
    // Whatever check caught it (a shape limit, an attribute, the verifier),
    // a plan that does not hold a valid graph is a corrupt plan.
    fail(ErrorKind::kPlanFormat, "plan '", source, "' holds an invalid graph: ", e.what());
  }
  return out;
}

namespace {

std::unique_ptr<Graph> read_graph(const char* gsec, uint64_t gsize, char* wbase, uint64_t wsize,
                                  const std::shared_ptr<void>& data, const std::string& source) {
  auto g = std::make_unique<Graph>();
  In in(gsec, gsize, source);
  uint32_t nv = in.count(9);
  std::vector<Value*> values(nv);
  std::vector<char> is_input(nv), is_output(nv);
  for (uint32_t i = 0; i < nv; ++i) {
    std::string name = in.str();
    int32_t dt = in.get<int32_t>();
    if (dt != 0 && !dtype_is_valid(dt)) in.corrupt(str_cat("value '", name, "' has an unknown dtype"));
    uint8_t flags = in.get<uint8_t>();
    Shape shape;
    if (flags & 1) {
      uint32_t rank = in.count(8);
      shape.resize(rank);
      for (auto& d : shape) d = in.get<int64_t>();
      check_tensor_size(shape, dtype_is_valid(dt) ? static_cast<DType>(dt) : DType::kUndefined,
                        str_cat("value '", name, "'"));
    }
    if (g->find_value(name)) in.corrupt(str_cat("value '", name, "' appears twice"));
    values[i] = g->add_value(name, static_cast<DType>(dt), (flags & 1) ? &shape : nullptr);
    if (flags & 2) {
      uint64_t off = in.get<uint64_t>(), bytes = in.get<uint64_t>();
      if (!(flags & 1)) in.corrupt(str_cat("constant '", name, "' has no shape"));
      for (int64_t d : shape) if (d < 0) in.corrupt(str_cat("constant '", name, "' has a negative dim"));
      if (off > wsize || bytes > wsize - off) in.corrupt(str_cat("weights of '", name, "' lie outside the weights section"));
      if (dt == 0) in.corrupt(str_cat("constant '", name, "' has no dtype"));
      if (bytes != shape_numel(shape) * dtype_size(static_cast<DType>(dt)))
        in.corrupt(str_cat("weights of '", name, "' do not match its shape"));
      auto t = std::make_shared<Tensor>(Tensor::borrow(static_cast<DType>(dt), shape, wbase + off, data));
      g->set_constant(values[i], t);
    }
    is_input[i] = (flags & 4) != 0;
    is_output[i] = (flags & 8) != 0;
  }
  auto value_at = [&](int64_t idx) -> Value* {
    if (idx == -1) return nullptr;
    if (idx < 0 || idx >= static_cast<int64_t>(nv)) in.corrupt("a value index is out of range");
    return values[idx];
  };
  uint32_t nin = in.count(4);
  for (uint32_t i = 0; i < nin; ++i) {
    Value* v = value_at(in.get<uint32_t>());
    if (!v) in.corrupt("bad graph input");
    if (v->is_graph_input() || v->is_constant()) in.corrupt(str_cat("bad graph input '", v->name(), "'"));
    g->add_input(v);
  }
  uint32_t nout = in.count(4);
  std::vector<Value*> outputs;
  for (uint32_t i = 0; i < nout; ++i) {
    Value* v = value_at(in.get<uint32_t>());
    if (!v) in.corrupt("bad graph output");
    for (Value* o : outputs)
      if (o == v) in.corrupt(str_cat("graph output '", v->name(), "' is listed twice"));
    outputs.push_back(v);
  }
  for (uint32_t i = 0; i < nv; ++i)
    if (is_input[i] != values[i]->is_graph_input() || is_output[i] != (std::find(outputs.begin(), outputs.end(), values[i]) != outputs.end()))
      in.corrupt(str_cat("the flags of value '", values[i]->name(), "' disagree with the graph's inputs and outputs"));
  uint32_t nn = in.count(16);
  for (uint32_t i = 0; i < nn; ++i) {
    std::string op_type = in.str(), domain = in.str(), name = in.str();
    std::vector<Value*> ins, outs;
    uint32_t ni = in.count(4);
    for (uint32_t k = 0; k < ni; ++k) ins.push_back(value_at(in.get<int32_t>()));
    uint32_t no = in.count(4);
    for (uint32_t k = 0; k < no; ++k) outs.push_back(value_at(in.get<int32_t>()));
    Attributes attrs;
    uint32_t na = in.count(5);
    for (uint32_t k = 0; k < na; ++k) {
      std::string an = in.str();
      attrs[an] = read_attr(in);
    }
    OpKind kind = op_kind_from_name(domain, op_type);
    if (kind == OpKind::kUnknown)
      in.corrupt(str_cat("node '", name, "' has op type '", op_type, "' unknown to this pyengine"));
    for (Value* o : outs)
      if (o && (o->producer() || o->is_constant() || o->is_graph_input()))
        in.corrupt(str_cat("value '", o->name(), "' is produced twice"));
    Node* n = g->add_node(kind, name, ins, outs, std::move(attrs));
    uint32_t norig = in.count(4);
    std::vector<std::string> origin;
    for (uint32_t k = 0; k < norig; ++k) origin.push_back(in.str());
    n->add_origin(origin);
  }
  for (Value* v : outputs) g->add_output(v);
  uint32_t nm = in.count(8);
  for (uint32_t i = 0; i < nm; ++i) {
    std::string k = in.str();
    g->metadata()[k] = in.str();
  }
  if (in.remaining() != 0) in.corrupt("trailing bytes after the graph");
  // The checks an imported model goes through (Graph.finalize).
  verify(*g);
  std::vector<std::pair<Value*, Shape>> stored;
  for (Value* v : g->values())
    if (v->producer() && v->has_shape()) stored.push_back({v, v->shape()});
  infer_shapes(*g);
  // The writer stored the shapes inference gave; an edited attribute (a pad,
  // a renamed or dropped attribute) changes them.
  for (auto& [v, s] : stored) {
    const Shape& now = v->shape();
    bool same = now.size() == s.size();
    for (size_t d = 0; same && d < s.size(); ++d) same = s[d] < 0 || now[d] < 0 || s[d] == now[d];
    if (!same)
      in.corrupt(str_cat("value '", v->name(), "' is stored with shape ", shape_str(s), " but its node ",
                         v->producer()->describe(), " computes ", shape_str(now)));
  }
  // The int8 layout is the loading machine's (a plan built with channels-last
  // int8 convs on a VNNI machine runs NCHW ones on an AVX2 one, and back).
  fit_int8_layout(*g);
  return g;
}

}  // namespace

PlanContents load_plan(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  ENGINE_ENFORCE(f.good(), kPlanFormat, "cannot open plan file '", path, "'");
  std::streamoff size = f.tellg();
  ENGINE_ENFORCE(size >= 0, kPlanFormat, "cannot read plan file '", path, "'");
  f.seekg(0);
  // One aligned buffer for the whole file: constant tensors borrow from it,
  // so weights are 64-byte aligned without another copy.
  auto buf = aligned_storage(static_cast<size_t>(size));
  f.read(static_cast<char*>(buf.get()), size);
  ENGINE_ENFORCE(f.good() || f.eof(), kPlanFormat, "error reading plan file '", path, "'");
  return read_plan(buf, static_cast<size_t>(size), path);
}

}  // namespace engine
