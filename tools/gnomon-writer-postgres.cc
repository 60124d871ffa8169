// gnomon-writer-postgres: a writer for a PostgreSQL server (15 or later), in
// a process of its own, through the writer library (vss/writer_server.h).
//   PrepareForBackup the backup options (checkpoint=fast|spread) and the
//                    previous backup stamp (an option it does not know fails
//                    the event: the backup, exit 4); with checkpoint=fast (the
//                    default) it starts a CHECKPOINT on a connection of its
//                    own that runs on past the event, beside the other
//                    writers' preparation (Writer::StartPreparation)
//   PrepareForSnapshot  with checkpoint=fast waits for that CHECKPOINT, then
//                    pg_backup_start('gnomon', true), whose own checkpoint
//                    then has little left to write; with checkpoint=spread
//                    pg_backup_start('gnomon', false), which waits for a
//                    checkpoint paced by checkpoint_completion_target; on
//                    one session this writer holds open (a non-exclusive
//                    backup). Its LSN is the redo point of that checkpoint.
//   Thaw             pg_backup_stop(false): the backup label and tablespace
//                    map of the snapshot
//   PostSnapshot     both stored as the component's backup metadata (JSON:
//                    label, tablespace_map, start_lsn, stop_lsn, and on an
//                    incremental or differential since_previous: the WAL
//                    written since the backup whose stamp came back), and a
//                    stamp (JSON, gnomon.postgresql-stamp/1: the cluster's
//                    system identifier, timeline, start and stop LSN)
//   BackupComplete   remembers the stamps of backups that succeeded, so the
//                    next incremental can tell its own stamp from another's
//   Abort            pg_backup_stop, so the server is not left in backup mode
// The data directory is one component (recursive file set), so it is
// included when its volume is backed up. The image is also an atomic,
// crash-consistent copy of the data directory: started as it is, PostgreSQL
// recovers from its own WAL. The label serves a restore with a WAL archive
// (point-in-time recovery): write it to backup_label before starting.
// The writer declares VSS_BS_TIMESTAMPED: gnomon keeps its stamps and hands
// each back on the next incremental (docs/vss.md, "Backup stamps").
//
// Usage: gnomon-writer-postgres --data-dir DIR [--conninfo STR] [--name NAME]
//                               [--dir DIR] [--freeze-timeout S]
#include <libpq-fe.h>
#include <unistd.h>

#include <CLI/CLI.hpp>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>
#include "base/json.h"
#include "tools/cli_checks.h"

#include "vss/backup_options.h"
#include "vss/writer_server.h"

namespace {

using nlohmann::json;
namespace vss = gnomon::vss;

constexpr const char* kStampSchema = "gnomon.postgresql-stamp/1";

// The backup options this writer understands (gnomon backup --writer-option).
const std::vector<vss::BackupOptionSpec>& Options() {
  static const std::vector<vss::BackupOptionSpec> kSpec = {
      {"checkpoint", {"fast", "spread"}, "fast"}};
  return kSpec;
}

// An LSN as PostgreSQL prints it ("16/B374D848"); false if it is not one.
bool ParseLsn(const std::string& s, uint64_t* out) {
  unsigned hi = 0, lo = 0;
  char rest = 0;
  if (std::sscanf(s.c_str(), "%X/%X%c", &hi, &lo, &rest) != 2) return false;
  *out = (static_cast<uint64_t>(hi) << 32) | lo;
  return true;
}

class PostgresWriter : public vss::Writer {
 public:
  PostgresWriter(std::string conninfo, std::string data_dir)
      : conninfo_(std::move(conninfo)), data_dir_(std::move(data_dir)) {
    vss::ReadBackupOptions("", Options(), &options_);  // the defaults
  }
  ~PostgresWriter() override {
    (void)FinishPreparation();  // the CHECKPOINT writes prepare_checkpoint_ms_
    if (conn_) PQfinish(conn_);
  }

  bool OnIdentify(vss::WriterMetadata* md) override {
    // Stamps (TIMESTAMPED) say how much WAL was written since the backup
    // they came from.
    md->backup_schema = vss::schema::kTimestamped | vss::schema::kIncremental |
                        vss::schema::kDifferential | vss::schema::kCopy;
    vss::ComponentInfo c;
    c.type = vss::ComponentType::kDatabase;
    c.logical_path = "postgresql";
    c.name = data_dir_;
    c.caption = "PostgreSQL cluster in " + data_dir_;
    vss::FileSpec f;
    f.path = data_dir_;
    f.recursive = true;
    c.files.push_back(f);
    md->components.push_back(c);
    return true;
  }

  bool OnPrepareBackup(vss::WriterComponents* comps) override {
    vss::ReadBackupOptions("", Options(), &options_);
    previous_stamp_.clear();
    for (auto& c : *comps) {
      if (gnomon::Status s = vss::ReadBackupOptions(c.GetBackupOptions(), Options(), &options_);
          !s.ok()) {
        // Not ignored: the user asked for a backup this writer cannot make.
        SetWriterFailure(vss::VSS_E_WRITERERROR_NONRETRYABLE, s.message());
        return false;
      }
      previous_stamp_ = c.GetPreviousBackupStamp();
    }
    (void)FinishPreparation();  // one left by a backup that ended before PrepareForSnapshot
    prepare_checkpoint_ms_ = -1;
    // PrepareForBackup reaches writers that take no part too (no components):
    // they must not force a checkpoint on the server.
    if (!comps->empty() && options_["checkpoint"] == "fast")
      StartPreparation([this] { return Checkpoint(); });
    return true;
  }

  bool OnPrepareSnapshot() override {
    label_ = tablespace_map_ = start_lsn_ = stop_lsn_ = system_identifier_ = "";
    timeline_ = 0;
    if (gnomon::Status s = FinishPreparation(); !s.ok()) {
      SetWriterFailure(vss::VSS_E_WRITERERROR_RETRYABLE, s.message());
      return false;
    }
    if (!Connect()) return false;
    std::vector<std::string> row;
    const bool fast = options_["checkpoint"] == "fast";
    if (!Query(fast ? "SELECT pg_backup_start('gnomon', true)"
                    : "SELECT pg_backup_start('gnomon', false)",
               &row))
      return false;
    start_lsn_ = row.empty() ? "" : row[0];
    in_backup_ = true;
    // Which cluster and timeline the stamp is of. Best effort: a role that
    // may not read the control data still gets its backup, and a stamp
    // whose next incremental cannot tell clusters apart.
    if (QuietQuery("SELECT system_identifier FROM pg_control_system()", &row) && !row.empty())
      system_identifier_ = row[0];
    if (QuietQuery("SELECT timeline_id FROM pg_control_checkpoint()", &row) && !row.empty())
      timeline_ = std::stoll(row[0]);
    return true;
  }
  bool OnFreeze() override { return true; }  // backup mode is the quiescence
  bool OnThaw() override { return Stop(); }
  bool OnAbort() override {
    if (in_backup_) Stop();
    return true;
  }
  bool OnPostSnapshot(vss::WriterComponents* comps) override {
    const json stamp{{"stamp", kStampSchema},
                     {"system_identifier", system_identifier_},
                     {"timeline", timeline_},
                     {"start_lsn", start_lsn_},
                     {"stop_lsn", stop_lsn_}};
    json md{{"label", label_},
            {"tablespace_map", tablespace_map_},
            {"start_lsn", start_lsn_},
            {"stop_lsn", stop_lsn_},
            {"backup_type", vss::BackupTypeName(GetBackupType())},
            {"options", options_},
            {"prepare_checkpoint_ms", prepare_checkpoint_ms_},
            {"previous_stamp", previous_stamp_}};
    const vss::BackupType type = GetBackupType();
    if (type == vss::BackupType::kIncremental || type == vss::BackupType::kDifferential)
      md["since_previous"] = SincePrevious(stamp);
    for (auto& c : *comps) {
      c.SetBackupMetadata(md.dump());
      c.SetBackupStamp(stamp.dump());
    }
    return true;
  }
  bool OnBackupComplete(vss::WriterComponents* comps) override {
    // Stamps of backups that can be built on: the next incremental's
    // previous stamp should be one of them.
    if (GetBackupType() == vss::BackupType::kCopy) return true;
    for (auto& c : *comps)
      if (c.GetBackupSucceeded() && !c.GetBackupStamp().empty()) {
        if (issued_.size() >= 256) issued_.erase(issued_.begin());
        issued_.insert(c.GetBackupStamp());
      }
    return true;
  }
  bool OnBackupShutdown(const vss::Guid&) override {
    // The session is needed only from PrepareForSnapshot to Thaw.
    if (conn_ && !in_backup_) {
      PQfinish(conn_);
      conn_ = nullptr;
    }
    return true;
  }

 private:
  // What an incremental or differential means for the cluster: the stamp
  // that came back must be this cluster's, from before this backup; the WAL
  // written from its checkpoint to this backup's is what changed.
  json SincePrevious(const json& now) const {
    auto invalid = [](const std::string& why) { return json{{"valid", false}, {"reason", why}}; };
    if (previous_stamp_.empty())
      return invalid("no previous stamp: no earlier backup of this cluster to build on");
    json prev;
    std::string err;
    if (!gnomon::ParseJsonBounded(previous_stamp_, &prev, &err, 1u << 20)) prev = nullptr;
    if (!prev.is_object() || prev.value("stamp", "") != kStampSchema)
      return invalid("the previous stamp is not a " + std::string(kStampSchema) +
                     " stamp (an older writer's?)");
    uint64_t prev_lsn = 0, lsn = 0;
    if (!prev.contains("start_lsn") || !prev["start_lsn"].is_string() ||
        !ParseLsn(prev["start_lsn"], &prev_lsn))
      return invalid("the previous stamp has no start LSN");
    if (!ParseLsn(start_lsn_, &lsn)) return invalid("this backup has no start LSN");
    const std::string prev_id = prev.value("system_identifier", "");
    if (!prev_id.empty() && !system_identifier_.empty() && prev_id != system_identifier_)
      return invalid("the previous stamp is of another cluster (system identifier " + prev_id +
                     ", this cluster's is " + system_identifier_ + ")");
    if (prev_lsn > lsn)
      return invalid("the previous stamp's WAL position " + prev["start_lsn"].get<std::string>() +
                     " is ahead of this backup's " + start_lsn_ +
                     " (the cluster was restored or re-created since?)");
    return json{{"valid", true},
                {"issued_by_this_writer", issued_.count(previous_stamp_) > 0},
                {"previous_start_lsn", prev["start_lsn"]},
                {"start_lsn", now["start_lsn"]},
                {"wal_bytes", lsn - prev_lsn},
                {"timeline_changed", prev.value("timeline", 0ll) != timeline_}};
  }

  // The CHECKPOINT begun in PrepareForBackup, on a connection of its own
  // (the writer's session is the event threads'); runs on its own thread.
  gnomon::Status Checkpoint() {
    const auto start = std::chrono::steady_clock::now();
    PGconn* c = PQconnectdb(conninfo_.c_str());
    gnomon::Status s;
    if (PQstatus(c) != CONNECTION_OK) {
      s = gnomon::Status::IOError("cannot connect to PostgreSQL: " +
                                  std::string(PQerrorMessage(c)));
    } else {
      PGresult* r = PQexec(c, "CHECKPOINT");
      if (PQresultStatus(r) != PGRES_COMMAND_OK)
        s = gnomon::Status::IOError("CHECKPOINT: " + std::string(PQresultErrorMessage(r)));
      PQclear(r);
    }
    PQfinish(c);
    prepare_checkpoint_ms_ = std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::steady_clock::now() - start)
                                 .count();
    return s;
  }

  bool Connect() {
    if (conn_ && PQstatus(conn_) == CONNECTION_OK) return true;
    if (conn_) PQfinish(conn_);
    conn_ = PQconnectdb(conninfo_.c_str());
    if (PQstatus(conn_) != CONNECTION_OK) {
      SetWriterFailure(vss::VSS_E_WRITERERROR_RETRYABLE,
                       "cannot connect to PostgreSQL: " + std::string(PQerrorMessage(conn_)));
      PQfinish(conn_);
      conn_ = nullptr;
      return false;
    }
    return true;
  }
  // Runs sql; the first row's columns as text in *row. On failure the
  // writer failure is set (Query) or not (QuietQuery).
  bool Query(const char* sql, std::vector<std::string>* row) {
    std::string err;
    if (Run(sql, row, &err)) return true;
    SetWriterFailure(vss::VSS_E_WRITERERROR_RETRYABLE, std::string(sql) + ": " + err);
    return false;
  }
  bool QuietQuery(const char* sql, std::vector<std::string>* row) {
    std::string err;
    return Run(sql, row, &err);
  }
  bool Run(const char* sql, std::vector<std::string>* row, std::string* err) {
    row->clear();
    PGresult* r = PQexec(conn_, sql);
    const ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
      *err = PQresultErrorMessage(r);
      PQclear(r);
      return false;
    }
    if (st == PGRES_TUPLES_OK && PQntuples(r) > 0)
      for (int i = 0; i < PQnfields(r); ++i) row->push_back(PQgetvalue(r, 0, i));
    PQclear(r);
    return true;
  }
  bool Stop() {
    if (!in_backup_) return true;
    in_backup_ = false;
    std::vector<std::string> row;
    if (!Query("SELECT lsn, labelfile, spcmapfile FROM pg_backup_stop(false)", &row)) return false;
    if (row.size() == 3) {
      stop_lsn_ = row[0];
      label_ = row[1];
      tablespace_map_ = row[2];
    }
    return true;
  }

  std::string conninfo_, data_dir_;
  PGconn* conn_ = nullptr;
  bool in_backup_ = false;
  std::string label_, tablespace_map_, start_lsn_, stop_lsn_, system_identifier_;
  long long timeline_ = 0;
  // This backup's options and previous stamp (PrepareForBackup).
  std::map<std::string, std::string> options_;
  std::string previous_stamp_;
  // How long the CHECKPOINT begun in PrepareForBackup took (-1: none);
  // written by its thread, read after FinishPreparation.
  long long prepare_checkpoint_ms_ = -1;
  std::set<std::string> issued_;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "gnomon-writer-postgres: takes part in gnomon backups for a PostgreSQL server:\n"
      "a checkpoint and pg_backup_start before the snapshot, pg_backup_stop after it,\n"
      "the backup label stored with the backup. Runs until SIGINT or SIGTERM."};
  app.footer(
      "Backup options (gnomon backup --writer-option NAME:KEY=VALUE; any other key fails\n"
      "the backup):\n"
      "  checkpoint=fast|spread\n"
      "      fast (default): an immediate CHECKPOINT, begun in PrepareForBackup, then\n"
      "      pg_backup_start(fast => true) in PrepareForSnapshot;\n"
      "      spread: pg_backup_start(fast => false), which waits for a checkpoint paced\n"
      "      by checkpoint_completion_target (less I/O at once, but PrepareForSnapshot\n"
      "      may then take minutes: gnomon gives it 120 s)\n"
      "Backup stamps: the cluster's system identifier, timeline and the backup's start\n"
      "and stop LSN. On an incremental or differential the backup metadata checks the\n"
      "stamp handed back is this cluster's and says how much WAL was written since it\n"
      "(since_previous: wal_bytes, issued_by_this_writer).");
  std::string conninfo = "dbname=postgres", data_dir, name = "postgresql";
  vss::WriterServerOptions opt;
  double freeze_s = 60;
  app.add_option("--data-dir", data_dir, "The cluster's data directory")->required();
  app.add_option("--conninfo", conninfo,
                 "libpq connection string of a superuser or a role allowed pg_backup_start "
                 "(default: dbname=postgres)");
  app.add_option("--name", name, "Writer name, also its socket's name (default postgresql)");
  app.add_option(
      "--dir", opt.dir,
      "Writer directory (default: $GNOMON_WRITER_DIR or " + vss::proto::DefaultWriterDir() + ")");
  app.add_option("--freeze-timeout", freeze_s, "Seconds of the freeze window (default 60)")
      ->check(gnomon::cli::Seconds(1.0, 600.0));
  CLI11_PARSE(app, argc, argv);
  char resolved[PATH_MAX];
  if (realpath(data_dir.c_str(), resolved)) data_dir = resolved;

  auto w = std::make_shared<PostgresWriter>(conninfo, data_dir);
  // A stable class id: the same writer from one run to the next (stamps are
  // handed back by class id).
  vss::Guid cls;
  vss::Guid::Parse("a3d6f1c8-2b47-4e91-8c0d-5e2f7b9a4c61", &cls);
  w->Initialize(cls, name, vss::UsageType::kUserData, vss::SourceType::kTransactedDb,
                vss::ApplicationLevel::kBackEnd, static_cast<uint32_t>(freeze_s * 1000));
  return vss::ServeUntilSignalled(w, opt, "gnomon-writer-postgres", data_dir);
}
