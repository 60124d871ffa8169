// A real writer program for the out-of-process writer tests: links the
// writer library (WriterServer), listens in DIR, and appends every event it
// receives to LOG, one line each, as it happens. Told to, it vetoes, crashes
// (_exit) or hangs at one event.
//
// Its backup schema is --schema (hex; default 0x33: TIMESTAMPED, INCREMENTAL,
// DIFFERENTIAL, COPY). It understands the backup options --options names
// (comma-separated keys; default none) and fails PrepareForBackup on any
// other. With --report FILE it appends, in PrepareForBackup, one JSON line
// per component saying what it received: {"type", "component",
// "previous_stamp", "options"}.
//
// With --prepare-ms N it begins work in PrepareForBackup that runs on for N
// ms (Writer::StartPreparation), logging "PreparationEnded" when it ends,
// and fails with MSG if --prepare-fail MSG; with --prepare-finish no its
// PrepareForSnapshot does not wait for that work (the bug the requester
// must catch), otherwise it waits and fails on the work's error.
//
// Usage: test_writer_app DIR NAME LOG [--veto EVENT] [--crash EVENT]
//                        [--hang EVENT] [--freeze-ms N] [--volume PATH]
//                        [--schema HEX] [--options K1,K2] [--report FILE]
//                        [--prepare-ms N] [--prepare-fail MSG]
//                        [--prepare-finish yes|no]
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "vss/backup_options.h"
#include "vss/writer_server.h"

namespace {

class AppWriter : public gnomon::vss::Writer {
 public:
  std::string log_path, veto, crash, hang, volume, report;
  uint32_t schema = gnomon::vss::schema::kTimestamped | gnomon::vss::schema::kIncremental |
                    gnomon::vss::schema::kDifferential | gnomon::vss::schema::kCopy;
  std::vector<gnomon::vss::BackupOptionSpec> options;
  int prepare_ms = -1;  // < 0: no preparation work
  std::string prepare_fail;
  bool prepare_finish = true;

  bool OnIdentify(gnomon::vss::WriterMetadata* md) override {
    if (!Event("Identify")) return false;
    gnomon::vss::ComponentInfo c;
    c.type = gnomon::vss::ComponentType::kDatabase;
    c.logical_path = "app";
    c.name = "db";
    gnomon::vss::FileSpec f;
    f.path = volume;
    c.files.push_back(f);
    md->components.push_back(c);
    md->backup_schema = schema;
    return true;
  }
  bool OnPrepareBackup(gnomon::vss::WriterComponents* comps) override {
    for (auto& c : *comps) {
      if (!report.empty())
        std::ofstream(report, std::ios::app)
            << nlohmann::json{{"type", gnomon::vss::BackupTypeName(GetBackupType())},
                              {"component", c.logical_path() + "\\" + c.name()},
                              {"previous_stamp", c.GetPreviousBackupStamp()},
                              {"options", c.GetBackupOptions()}}
                   .dump()
            << std::endl;
      std::map<std::string, std::string> opts;
      if (gnomon::Status s = gnomon::vss::ReadBackupOptions(c.GetBackupOptions(), options, &opts);
          !s.ok()) {
        Event("PrepareForBackup");
        SetWriterFailure(gnomon::vss::VSS_E_WRITERERROR_NONRETRYABLE, name() + ": " + s.message());
        return false;
      }
      c.SetBackupMetadata("metadata from " + name());
    }
    if (prepare_ms >= 0)
      StartPreparation([this] {
        std::this_thread::sleep_for(std::chrono::milliseconds(prepare_ms));
        { std::ofstream(log_path, std::ios::app) << "PreparationEnded" << std::endl; }
        return prepare_fail.empty() ? gnomon::Status::OK() : gnomon::Status::IOError(prepare_fail);
      });
    return Event("PrepareForBackup");
  }
  bool OnPrepareSnapshot() override {
    if (prepare_finish)
      if (gnomon::Status s = FinishPreparation(); !s.ok()) {
        Event("PrepareForSnapshot");
        SetWriterFailure(gnomon::vss::VSS_E_WRITERERROR_RETRYABLE, s.message());
        return false;
      }
    return Event("PrepareForSnapshot");
  }
  ~AppWriter() override { (void)FinishPreparation(); }
  bool OnFreeze() override { return Event("Freeze"); }
  bool OnThaw() override { return Event("Thaw"); }
  bool OnPostSnapshot(gnomon::vss::WriterComponents* comps) override {
    for (auto& c : *comps) {
      c.SetBackupStamp("stamp from " + name() + " for " +
                       gnomon::vss::BackupTypeName(GetBackupType()));
      c.AddPartialFile(volume, "db", "0:4096", "first page");
    }
    return Event("PostSnapshot");
  }
  bool OnAbort() override { return Event("Abort"); }
  bool OnBackupComplete(gnomon::vss::WriterComponents*) override { return Event("BackupComplete"); }
  bool OnBackupShutdown(const gnomon::vss::Guid&) override { return Event("BackupShutdown"); }

 private:
  bool Event(const std::string& ev) {
    { std::ofstream(log_path, std::ios::app) << ev << std::endl; }
    if (ev == crash) _exit(9);
    if (ev == hang)
      for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
    if (ev == veto) {
      SetWriterFailure(gnomon::vss::VSS_E_WRITERERROR_RETRYABLE, name() + " vetoes " + ev);
      return false;
    }
    return true;
  }
};

// For the component selection tests: --layout set identifies a writer with
// component sets instead (all on the volume but `extra`):
//   app\db      not selectable, top level: required
//   data        selectable: defines a set of data\log and data\index
//   data\log    not selectable: comes in only with data (selectable for restore)
//   data\index  selectable subcomponent: with data, or on its own
//   extra       selectable, its file not on the volume
// and --components-log FILE appends, at each PrepareForBackup, the
// components the writer was given ("path\name" comma-separated; an empty
// line if none).
class SetAppWriter : public AppWriter {
 public:
  std::string layout, components_log;

  bool OnIdentify(gnomon::vss::WriterMetadata* md) override {
    if (!AppWriter::OnIdentify(md)) return false;
    if (layout != "set") return true;
    md->components.clear();
    auto add = [&](const char* path, const char* name, bool selectable, const std::string& file) {
      gnomon::vss::ComponentInfo c;
      c.type = gnomon::vss::ComponentType::kFileGroup;
      c.logical_path = path;
      c.name = name;
      c.selectable = selectable;
      gnomon::vss::FileSpec f;
      f.path = file;
      c.files.push_back(f);
      md->components.push_back(c);
    };
    add("app", "db", false, volume);
    add("", "data", true, volume);
    add("data", "log", false, volume);
    md->components.back().selectable_for_restore = true;
    add("data", "index", true, volume);
    add("", "extra", true, "/nonexistent/gnomon-test-extra");
    return true;
  }
  bool OnPrepareBackup(gnomon::vss::WriterComponents* comps) override {
    if (!components_log.empty()) {
      std::string names;
      for (auto& c : *comps)
        names += (names.empty() ? "" : ",") +
                 (c.logical_path().empty() ? c.name() : c.logical_path() + "\\" + c.name());
      std::ofstream(components_log, std::ios::app) << names << std::endl;
    }
    return AppWriter::OnPrepareBackup(comps);
  }
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: test_writer_app DIR NAME LOG [options]\n");
    return 2;
  }
  auto w = std::make_shared<SetAppWriter>();
  w->log_path = argv[3];
  uint32_t freeze_ms = 60000;
  for (int i = 4; i + 1 < argc; i += 2) {
    std::string opt = argv[i], val = argv[i + 1];
    if (opt == "--layout") w->layout = val;
    if (opt == "--components-log") w->components_log = val;
    if (opt == "--veto") w->veto = val;
    if (opt == "--crash") w->crash = val;
    if (opt == "--hang") w->hang = val;
    if (opt == "--freeze-ms") freeze_ms = static_cast<uint32_t>(std::stoul(val));
    if (opt == "--volume") w->volume = val;
    if (opt == "--schema") w->schema = static_cast<uint32_t>(std::stoul(val, nullptr, 16));
    if (opt == "--report") w->report = val;
    if (opt == "--prepare-ms") w->prepare_ms = std::stoi(val);
    if (opt == "--prepare-fail") w->prepare_fail = val;
    if (opt == "--prepare-finish") w->prepare_finish = val != "no";
    if (opt == "--options")
      for (size_t p = 0; p <= val.size();) {
        size_t comma = val.find(',', p);
        if (comma == std::string::npos) comma = val.size();
        if (comma > p) w->options.push_back({val.substr(p, comma - p), {}, ""});
        p = comma + 1;
      }
  }
  w->Initialize(gnomon::vss::Guid::Random(), argv[2], gnomon::vss::UsageType::kUserData,
                gnomon::vss::SourceType::kTransactedDb, gnomon::vss::ApplicationLevel::kFrontEnd,
                freeze_ms);
  gnomon::vss::WriterServerOptions opt;
  opt.dir = argv[1];
  return gnomon::vss::ServeUntilSignalled(w, opt, "test_writer_app", argv[2]);
}
