// gnomon bench: the throughput-benchmarking command (engine/bench_job.h).
#include <cstdio>
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
  std::printf("source %s: %s used, sample %s in memory, %d threads\n\n", r.source.c_str(),
              HumanBytes(static_cast<double>(r.source_bytes)).c_str(),
              HumanBytes(static_cast<double>(r.sample_bytes)).c_str(), r.threads);
  std::printf("%-10s %-7s %5s %12s %7s  %s\n", "STAGE", "THREADS", "LEVEL", "MB/s", "RATIO",
              "DETAIL");
  for (const auto& s : r.stages) {
    std::string level = s.level ? std::to_string(s.level) : "";
    char ratio[16] = "";
    if (s.ratio > 0) std::snprintf(ratio, sizeof ratio, "%.2f", s.ratio);
    std::printf("%-10s %7d %5s %12.1f %7s  %s\n", s.stage.c_str(), s.threads, level.c_str(),
                s.mb_per_s, ratio, s.detail.c_str());
  }
  std::printf(
      "\nlimits in MB/s of volume: read %.0f, cpu (hash + compress on %d threads) %.0f, "
      "write %.0f\nthe pipeline is bound by: %s\n",
      r.read_limit, r.threads, r.cpu_limit, r.write_limit, r.bound_by.c_str());
  if (r.block_map == "ext4")
    std::printf("(the pipeline read only the used blocks of the ext4 filesystem: %s of %s)\n",
                HumanBytes(static_cast<double>(r.pipeline_bytes_read)).c_str(),
                HumanBytes(static_cast<double>(r.source_bytes)).c_str());
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
