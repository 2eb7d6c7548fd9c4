// Errors that cross the C++/Python boundary.
//
// engine::Error is a user's problem (bad model, unsupported op, wrong input);
// its kind selects the Python exception class (see bindings/module.cc).
// ENGINE_CHECK is for broken invariants, i.e. our bugs: it throws kInternal
// with file:line so the report points at the code, not at the model.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace engine {

enum class ErrorKind {
  kInvalidModel,        // malformed graph, bad attributes
  kUnsupportedOperator, // op type (or a variant of it) we do not run
  kShape,               // wrong input shape, inconsistent shapes
  kDType,               // wrong input dtype
  kPlanFormat,          // corrupt, truncated or incompatible plan file
  kInvalidArgument,     // bad API usage (unknown input name, bad option)
  kInternal,            // a bug in pyengine
};

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message)
      : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

template <typename... Args>
std::string str_cat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}

template <typename... Args>
[[noreturn]] void fail(ErrorKind kind, Args&&... args) {
  throw Error(kind, str_cat(std::forward<Args>(args)...));
}

}  // namespace engine

#define ENGINE_CHECK(cond, ...)                                                  \
  do {                                                                           \
    if (!(cond))                                                                 \
      ::engine::fail(::engine::ErrorKind::kInternal, "internal error at ",       \
                     __FILE__, ":", __LINE__, ": check '", #cond, "' failed. ",  \
                     ##__VA_ARGS__);                                             \
  } while (0)

// Throws a user-facing error of the given kind when cond is false.
#define ENGINE_ENFORCE(cond, kind, ...)                                          \
  do {                                                                           \
    if (!(cond)) ::engine::fail(::engine::ErrorKind::kind, __VA_ARGS__);         \
  } while (0)
