#include "passes/pass_manager.h"

#include <algorithm>
#include <chrono>
#include <unordered_set>

namespace engine {

namespace {

std::string known_passes() {
  std::string s;
  for (const Pass* p : default_passes()) s += (s.empty() ? "" : ", ") + std::string(p->name());
  return s;
}

const Pass* need_pass(const std::string& name, const char* what) {
  const Pass* p = find_pass(name);
  ENGINE_ENFORCE(p, kInvalidArgument, what, ": unknown pass '", name, "' (known: ", known_passes(), ")");
  return p;
}

}  // namespace

int fit_int8_layout(Graph& g) {
  PassManagerOptions o;
  o.passes = {"int8_channels_last", "int8_channels_first"};
  int n = 0;
  for (const PassStats& s : run_passes(g, o).passes) n += s.rewrites;
  return n;
}

std::map<std::string, int> count_ops(const Graph& g) {
  std::map<std::string, int> m;
  for (const Node* n : g.nodes()) ++m[n->op_type()];
  return m;
}

PassReport run_passes(Graph& g, const PassManagerOptions& options) {
  std::vector<const Pass*> pipeline;
  if (options.passes.empty()) {
    const std::vector<const Pass*>* named = find_pipeline(options.pipeline);
    if (!named) {
      std::string known;
      for (const auto& n : pipeline_names()) known += (known.empty() ? "" : ", ") + n;
      fail(ErrorKind::kInvalidArgument, "unknown pipeline '", options.pipeline, "' (known: ", known, ")");
    }
    pipeline = *named;
  } else {
    for (const auto& name : options.passes) pipeline.push_back(need_pass(name, "passes"));
  }
  std::unordered_set<std::string> disabled;
  for (const auto& name : options.disable) disabled.insert(std::string(need_pass(name, "disable")->name()));

  PassReport report;
  report.nodes_before = g.num_nodes();
  report.ops_before = count_ops(g);
  // Stats once per distinct pass, in first-appearance order.
  std::map<const Pass*, size_t> stat_index;
  for (const Pass* p : pipeline) {
    if (stat_index.count(p)) continue;
    stat_index[p] = report.passes.size();
    PassStats s;
    s.name = std::string(p->name());
    report.passes.push_back(s);
  }
  // The refusals of each pass's last sweep: earlier sweeps' reasons may have
  // been made moot by later rewrites.
  std::map<const Pass*, std::vector<Refusal>> refusals;

  bool done = false;
  for (int round = 0; round < options.max_rounds && !done; ++round) {
    bool changed = false;
    ++report.rounds;
    for (const Pass* p : pipeline) {
      if (disabled.count(std::string(p->name()))) continue;
      if (options.stop_after >= 0 && report.pass_runs >= options.stop_after) {
        report.stopped = true;
        done = true;
        break;
      }
      ++report.pass_runs;
      PassStats& stats = report.passes[stat_index[p]];
      auto t0 = std::chrono::steady_clock::now();
      for (int it = 0;; ++it) {
        if (it == options.max_iterations) {
          report.hit_cap = true;
          break;
        }
        PassContext ctx(options.explain);
        int n = p->run_once(g, ctx);
        ++stats.sweeps;
        stats.rewrites += n;
        for (auto& kv : ctx.pattern_counts()) stats.patterns[kv.first] += kv.second;
        refusals[p] = std::move(ctx.refusals());
        if (options.explain)
          for (auto& r : ctx.rewrites()) report.rewrites.push_back(std::move(r));
        if (options.verify_each) {
          try {
            verify(g);
          } catch (const Error& e) {
            fail(ErrorKind::kInternal, "pass '", p->name(), "' left an invalid graph: ", e.what());
          }
        }
        if (n == 0) break;
        changed = true;
      }
      stats.ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    }
    if (!changed) break;
    if (round + 1 == options.max_rounds) report.hit_cap = true;
  }

  // Keep refusals about nodes that still exist (a pass that did not run in
  // the last round may have refused a node a later pass replaced).
  std::unordered_set<std::string> names;
  for (const Node* n : g.nodes()) names.insert(n->name());
  for (const Pass* p : pipeline) {
    auto it = refusals.find(p);
    if (it == refusals.end()) continue;
    for (auto& r : it->second)
      if (names.count(r.node)) report.refused.push_back(std::move(r));
    refusals.erase(it);
  }
  verify(g);
  report.nodes_after = g.num_nodes();
  report.ops_after = count_ops(g);
  return report;
}

}  // namespace engine
