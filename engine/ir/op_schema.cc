#include <cstring>

#include "ir/op_kind.h"

namespace engine {
namespace {

struct OpEntry {
  OpKind kind;
  const char* name;
  const char* domain;
};

const OpEntry kOps[] = {
    {OpKind::kUnknown, "Unknown", ""},
#define OP(kind, name, domain) {OpKind::kind, name, domain},
#include "ir/ops.def"
#undef OP
};

}  // namespace

const char* op_name(OpKind k) { return kOps[static_cast<int>(k)].name; }
const char* op_domain(OpKind k) { return kOps[static_cast<int>(k)].domain; }

OpKind op_kind_from_name(std::string_view domain, std::string_view op_type) {
  if (domain == "ai.onnx") domain = "";
  for (const OpEntry& e : kOps) {
    if (e.kind == OpKind::kUnknown) continue;
    if (op_type == e.name && domain == e.domain) return e.kind;
  }
  return OpKind::kUnknown;
}

}  // namespace engine
