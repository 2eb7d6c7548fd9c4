// The PassManager: runs the pipeline of passes over a graph.
//
// Each pass runs to a fixed point (until a sweep changes nothing) under an
// iteration cap; the whole pipeline then repeats while any pass changed the
// graph, again under a cap, because a late pass can expose work for an
// earlier one (a fused node makes a Reshape dead, a fold makes a Transpose
// pair adjacent). Hitting a cap is not an error: the graph is valid after
// every sweep, only possibly less optimized; the report says so.
//
// Debugging aids (STYLE.md section 3):
//  - verify_each: verify() after every sweep (tests turn it on), naming the
//    pass that broke an invariant;
//  - disable: skip passes by name;
//  - stop_after: run only the first N pass runs of the pipeline, so a bad
//    rewrite can be bisected;
//  - explain: also keep the reasons of patterns that did not apply at all.
// Thread-safety: run_passes() mutates only the graph it is given.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "passes/pass.h"

namespace engine {

struct PassManagerOptions {
  std::string pipeline = "default";  // a named pipeline (registry.cc), used when `passes` is empty
  std::vector<std::string> passes;   // empty: the named pipeline
  std::vector<std::string> disable;  // names to skip
  int stop_after = -1;               // pass runs to execute; < 0: all
  bool verify_each = false;
  bool explain = false;
  int max_iterations = 100;          // sweeps per pass run
  int max_rounds = 4;                // repeats of the whole pipeline
};

struct PassStats {
  std::string name;
  int rewrites = 0;     // patterns applied, over all runs
  int sweeps = 0;
  double ms = 0;
  std::map<std::string, int> patterns;  // rewrites per pattern
};

struct PassReport {
  std::vector<PassStats> passes;  // pipeline order, each pass once
  size_t nodes_before = 0, nodes_after = 0;
  std::map<std::string, int> ops_before, ops_after;
  // Matches refused at the fixed point (earlier refusals that a later
  // rewrite made moot are dropped).
  std::vector<Refusal> refused;
  std::vector<RewriteRecord> rewrites;
  int rounds = 0;
  int pass_runs = 0;
  bool stopped = false;       // stop_after cut the pipeline short
  bool hit_cap = false;       // an iteration or round cap was reached
};

// The default pipeline, in order (registry.cc explains the order).
const std::vector<const Pass*>& default_passes();
// A named pipeline: "default" (float models), "quantize" (a float graph
// about to be calibrated and given Q/DQ), "int8" (a graph with Q/DQ, run on
// the int8 kernels); nullptr when unknown.
const std::vector<const Pass*>* find_pipeline(const std::string& name);
std::vector<std::string> pipeline_names();
// Every pass by name, including ones not in the default pipeline; nullptr
// when unknown.
const Pass* find_pass(const std::string& name);

// Runs the selected passes on `g` in place and reports what happened.
// Throws kInvalidArgument for unknown pass names, and whatever verify()
// throws (prefixed with the pass) when verify_each is on.
PassReport run_passes(Graph& g, const PassManagerOptions& options = {});

// Puts a graph's int8 convs in the activation layout this machine's int8
// kernels prefer (dispatch.h, int8_channels_last()): int8_channels_last
// where that is channels-last, int8_channels_first (its inverse) where it is
// not. Plan loading calls it, so a plan built on one machine runs in the
// layout of the one that loads it. Returns the nodes rewritten (0: the graph
// was already in that layout, or has no int8 convs).
int fit_int8_layout(Graph& g);

// Op counts by op type ("Conv", "FusedConv", ...).
std::map<std::string, int> count_ops(const Graph& g);

}  // namespace engine
