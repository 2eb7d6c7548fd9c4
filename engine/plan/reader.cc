// Plan reader: validates everything before trusting it (format.md). Every
// read is bounds-checked, so a corrupt or truncated file is a clear
// PlanFormatError, never a crash.
#include <cstring>
#include <fstream>

#include "plan/plan.h"

namespace engine {
namespace {

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
    return s;
  }
  uint32_t count(size_t min_item_bytes) {
    uint32_t c = get<uint32_t>();
    // A count larger than the bytes left is a corrupt file, not a big graph.
    if (static_cast<uint64_t>(c) * min_item_bytes > n_ - pos_) corrupt("a list length is larger than the file");
    return c;
  }
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
  auto t = std::make_shared<Tensor>(static_cast<DType>(dt), shape);
  if (bytes != t->nbytes()) in.corrupt("attribute tensor size does not match its shape");
  std::memcpy(t->raw(), in.take(bytes), bytes);
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
  auto g = std::make_unique<Graph>();
  In in(sec[2], sec_size[2], source);
  uint32_t nv = in.count(9);
  std::vector<Value*> values(nv);
  std::vector<char> is_input(nv), is_output(nv);
  char* wbase = static_cast<char*>(data.get()) + sec_off[3];
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
    }
    if (g->find_value(name)) in.corrupt(str_cat("value '", name, "' appears twice"));
    values[i] = g->add_value(name, static_cast<DType>(dt), (flags & 1) ? &shape : nullptr);
    if (flags & 2) {
      uint64_t off = in.get<uint64_t>(), bytes = in.get<uint64_t>();
      if (!(flags & 1)) in.corrupt(str_cat("constant '", name, "' has no shape"));
      for (int64_t d : shape) if (d < 0) in.corrupt(str_cat("constant '", name, "' has a negative dim"));
      if (off > sec_size[3] || bytes > sec_size[3] - off) in.corrupt(str_cat("weights of '", name, "' lie outside the weights section"));
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
    g->add_input(v);
  }
  uint32_t nout = in.count(4);
  std::vector<Value*> outputs;
  for (uint32_t i = 0; i < nout; ++i) {
    Value* v = value_at(in.get<uint32_t>());
    if (!v) in.corrupt("bad graph output");
    outputs.push_back(v);
  }
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
      if (o && (o->producer() || o->is_constant())) in.corrupt(str_cat("value '", o->name(), "' is produced twice"));
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
  try {
    verify(*g);
  } catch (const Error& e) {
    fail(ErrorKind::kPlanFormat, "plan '", source, "' holds an invalid graph: ", e.what());
  }
  out.graph = std::move(g);
  return out;
}

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
