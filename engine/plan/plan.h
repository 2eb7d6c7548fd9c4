// Plan files: a graph (optimized, possibly quantized) plus metadata, in one
// self-describing binary file. The layout is specified in plan/format.md.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "ir/graph.h"

namespace engine {

constexpr uint32_t kPlanFormatVersion = 1;

struct PlanContents {
  std::unique_ptr<Graph> graph;
  std::string metadata_json;  // written by the caller (Python); opaque to C++
  // Section kind 4 (optional): a serialized backend engine, e.g. TensorRT's
  // plan bytes, which pyengine's TensorRT backend deserializes. Empty if absent.
  std::string engine_blob;
};

// Serializes to bytes / a file. Throws kPlanFormat on an I/O error. A
// non-empty `engine_blob` is written as section kind 4 (64-byte aligned).
std::string write_plan(const Graph& g, const std::string& metadata_json, const std::string& engine_blob = "");
void save_plan(const Graph& g, const std::string& metadata_json, const std::string& path,
               const std::string& engine_blob = "");

// Parses bytes / a file. Every malformed, truncated or corrupted input is an
// Error(kPlanFormat) naming what is wrong (and the path, for files); never a
// crash. Constant tensors borrow from one buffer holding the file.
PlanContents read_plan(std::shared_ptr<void> data, size_t size, const std::string& source);
PlanContents load_plan(const std::string& path);

// 64-bit checksum used by the format (documented in format.md).
uint64_t plan_checksum(const void* data, size_t size);

}  // namespace engine
