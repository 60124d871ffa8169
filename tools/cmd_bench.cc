// gnomon bench: the throughput-benchmarking command (engine/bench_job.h).
#include <fmt/format.h>
#include <iostream>

#include "engine/bench_job.h"
#include "tools/cli.h"
#include "tools/progress_display.h"

namespace gnomon::cli {

using nlohmann::json;

namespace {

json BenchJson(const BenchResult& r) {
  json stages = json::array();
  for (const auto& s : r.stages) {
    json j{{"stage", s.stage}, {"detail", s.detail},   {"threads", s.threads},
           {"bytes", s.bytes}, {"seconds", s.seconds}, {"mb_per_s", s.mb_per_s}};
    if (s.stage == "compress" || s.stage == "pipeline") {
      j["level"] = s.level;
      j["ratio"] = s.ratio;
    }
    stages.push_back(j);
  }
  return json{{"source", r.source},
              {"source_bytes", r.source_bytes},
              {"sample_bytes", r.sample_bytes},
              {"threads", r.threads},
              {"stages", stages},
              {"limits", {{"read", r.read_limit}, {"cpu", r.cpu_limit}, {"write", r.write_limit}}},
              {"bound_by", r.bound_by},
              {"block_map", r.block_map},
              {"pipeline_bytes_read", r.pipeline_bytes_read}};
}

void PrintTable(const BenchResult& r) {
  fmt::print("source {}: {} used, sample {} in memory, {} threads\n\n", r.source,
             HumanBytes(static_cast<double>(r.source_bytes)),
             HumanBytes(static_cast<double>(r.sample_bytes)), r.threads);
  fmt::print("{:<10} {:<7} {:>5} {:>12} {:>7}  {}\n", "STAGE", "THREADS", "LEVEL", "MB/s", "RATIO",
             "DETAIL");
  for (const auto& s : r.stages) {
    std::string level = s.level ? std::to_string(s.level) : "";
    std::string ratio = s.ratio > 0 ? fmt::format("{:.2f}", s.ratio) : "";
    fmt::print("{:<10} {:>7} {:>5} {:>12.1f} {:>7}  {}\n", s.stage, s.threads, level, s.mb_per_s,
               ratio, s.detail);
  }
  fmt::print(
      "\nlimits in MB/s of volume: read {:.0f}, cpu (hash + compress on {} threads) {:.0f}, "
      "write {:.0f}\nthe pipeline is bound by: {}\n",
      r.read_limit, r.threads, r.cpu_limit, r.write_limit, r.bound_by);
  if (r.block_map == "ext4")
    fmt::print("(the pipeline read only the used blocks of the ext4 filesystem: {} of {})\n",
               HumanBytes(static_cast<double>(r.pipeline_bytes_read)),
               HumanBytes(static_cast<double>(r.source_bytes)));
}

}  // namespace

int CmdBench(const Globals& g, BenchOptions opt) {
  ProgressDisplay progress(!g.json && !g.quiet);
  opt.threads = g.threads;
  opt.progress = progress.Callback();
  opt.cancel = &g_cancel;
  BenchResult r;
  Status s = RunBench(opt, &r);
  progress.Finish();
  if (!s.ok()) return Fail(g, s);
  if (g.json)
    std::cout << BenchJson(r).dump() << "\n";
  else
    PrintTable(r);
  return kOk;
}

}  // namespace gnomon::cli
