// Script writers and writers in other processes, through the real gnomon
// binary: what a script receives for each event, a script's veto and
// deadline, a writer program's components in the stored backup, the stamps
// each gets back on an incremental, backup options (--writer-option), and
// `gnomon writers` listing every kind.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "tests/test_util.h"

namespace gnomon {
namespace {

using nlohmann::json;
using test::Gnomon;
using test::TempDir;
namespace fs = std::filesystem;

std::vector<std::string> Lines(const std::string& path) {
  std::vector<std::string> v;
  std::ifstream f(path);
  for (std::string line; std::getline(f, line);) v.push_back(line);
  return v;
}

class WritersCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    repo_ = dir_ / "repo";
    ASSERT_EQ(Gnomon({"init", "--repo", repo_, "--chunk-size", "64"}).exit_code, 0);
    volume_ = dir_ / "vol";
    test::WriteFile(volume_, test::TextLikeBytes(1u << 20, 3));
    fs::create_directories(state_.hooks_dir());
  }
  // Installs an executable script in the hooks directory.
  void Script(const std::string& name, const std::string& body) {
    std::string p = state_.hooks_dir() + "/" + name;
    std::ofstream(p) << "#!/bin/sh\n" << body;
    ::chmod(p.c_str(), 0755);
  }
  test::CommandResult Backup(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--repo", repo_, "backup"};
    args.insert(args.end(), extra.begin(), extra.end());
    args.push_back(volume_);
    return Gnomon(args);
  }
  test::IsolatedState state_;
  TempDir dir_;
  std::string repo_, volume_;
};

TEST_F(WritersCliTest, ScriptHearsEveryEventWithItsArgumentsAndEnvironment) {
  const std::string log = dir_ / "events";
  Script("10-log",
         "echo \"$1|$2|$3|$4|$GNOMON_EVENT|$GNOMON_BACKUP_TYPE|$GNOMON_VOLUMES\" >> " + log + "\n");
  Script("20-ignored~", "exit 1\n");  // a backup file: not run (as run-parts)
  auto r = Backup();
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto lines = Lines(log);
  std::vector<std::string> events;
  for (const auto& l : lines) events.push_back(l.substr(0, l.find('|')));
  EXPECT_EQ(events,
            (std::vector<std::string>{"PrepareForBackup", "PrepareForSnapshot", "Freeze", "Thaw",
                                      "PostSnapshot", "BackupComplete", "BackupShutdown"}));
  // Freeze: the set id (a GUID), the type, the volume, in arguments and
  // environment alike.
  const std::string freeze = lines.at(2);
  std::vector<std::string> f;
  std::stringstream in(freeze);
  for (std::string part; std::getline(in, part, '|');) f.push_back(part);
  ASSERT_EQ(f.size(), 7u) << freeze;
  EXPECT_EQ(f[1].size(), 36u) << freeze;
  EXPECT_EQ(f[2], "full");
  EXPECT_EQ(f[3], volume_);
  EXPECT_EQ(f[4], "Freeze");
  EXPECT_EQ(f[5], "full");
  EXPECT_EQ(f[6], volume_);
}

TEST_F(WritersCliTest, FailingScriptVetoesTheFreezeWithItsStderr) {
  const std::string log = dir_ / "events";
  Script("db-hook", "echo \"$1\" >> " + log +
                        "\nif [ \"$1\" = Freeze ]; then echo 'database is busy' >&2; exit 3; fi\n");
  auto r = Backup();
  EXPECT_EQ(r.exit_code, 4) << r.err;  // no consistent snapshot
  EXPECT_NE(r.err.find("database is busy"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("exited with status 3"), std::string::npos) << r.err;
  auto events = Lines(log);
  ASSERT_GE(events.size(), 4u);
  EXPECT_EQ(events[2], "Freeze");
  EXPECT_NE(std::find(events.begin(), events.end(), "Abort"), events.end());
  EXPECT_EQ(std::find(events.begin(), events.end(), "PostSnapshot"), events.end());
  // Nothing was stored.
  auto l = Gnomon({"--repo", repo_, "list", "--json"});
  EXPECT_EQ(json::parse(l.out).size(), 0u);
}

TEST_F(WritersCliTest, AScriptGetsItsBackupOptionsInEveryEventAndMayRefuseThem) {
  const std::string log = dir_ / "events";
  Script("10-opts", "echo \"$1 $(printf %s \"$GNOMON_BACKUP_OPTIONS\" | tr '\\n' ';')\" >> " + log +
                        "\ncase \"$GNOMON_BACKUP_OPTIONS\" in *colour=*) echo 'colour?' >&2; "
                        "exit 5;; esac\n");
  auto r = Backup({"--writer-option", "script 10-opts:mode=quiet", "--writer-option",
                   "script 10-opts:level=2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto lines = Lines(log);
  std::string all;
  for (const auto& l : lines) all += l + "\n";
  ASSERT_EQ(lines.size(), 7u) << all;
  for (const auto& l : lines) EXPECT_EQ(l.substr(l.find(' ')), " mode=quiet;level=2;") << l;
  // Without options the variable is empty.
  ASSERT_EQ(Backup().exit_code, 0);
  EXPECT_EQ(Lines(log).at(7), "PrepareForBackup ");
  // A value that is not UTF-8 cannot travel in the BCD: refused up front.
  r = Backup({"--writer-option", "script 10-opts:k=\xff\xfe"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("not UTF-8"), std::string::npos) << r.err;
  // A script may refuse an option as any writer does: a veto, exit 4.
  r = Backup({"--writer-option", "script 10-opts:colour=blue"});
  EXPECT_EQ(r.exit_code, 4) << r.err;
  EXPECT_NE(r.err.find("colour?"), std::string::npos) << r.err;
}

TEST_F(WritersCliTest, ScriptPastItsDeadlineIsKilledAndTheBackupFails) {
  Script("slow", "if [ \"$1\" = Freeze ]; then sleep 60; fi\n");
  const auto t0 = std::chrono::steady_clock::now();
  auto r = Backup({"--freeze-timeout", "2"});  // the script gets half: 1 s
  EXPECT_EQ(r.exit_code, 4) << r.err;
  EXPECT_NE(r.err.find("killed after its 1000 ms deadline"), std::string::npos) << r.err;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(30));
}

// A writer program in the writer directory, stopped when the object dies.
// extra: more of test_writer_app's options (--schema, --options, --report).
class App : public test::BackgroundProcess {
 public:
  App(const std::string& dir, const std::string& name, const std::string& log,
      const std::string& volume, std::vector<std::string> extra = {})
      : test::BackgroundProcess(Args(dir, name, log, volume, std::move(extra)),
                                dir + "/" + name + ".sock") {}

 private:
  static std::vector<std::string> Args(const std::string& dir, const std::string& name,
                                       const std::string& log, const std::string& volume,
                                       std::vector<std::string> extra) {
    std::vector<std::string> args = {TEST_WRITER_APP_BIN, dir, name, log, "--volume", volume};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }
};

TEST_F(WritersCliTest, WriterProgramTakesPartAndItsStampIsStored) {
  App app(state_.writer_dir(), "appdb", dir_ / "app.log", volume_);
  auto r = Gnomon({"--repo", repo_, "backup", "--json", volume_});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto show = Gnomon({"--repo", repo_, "show", "--json", "latest"});
  ASSERT_EQ(show.exit_code, 0) << show.err;
  json rec = json::parse(show.out);
  bool found = false;
  for (const auto& c : rec["vss"]["bcd"]["components"])
    if (c["writer_name"] == "appdb") {
      found = true;
      EXPECT_EQ(c["backup_stamp"], "stamp from appdb for full");
      EXPECT_EQ(c["backup_metadata"], "metadata from appdb");
    }
  EXPECT_TRUE(found) << rec["vss"]["bcd"].dump();
  EXPECT_EQ(
      Lines(dir_ / "app.log"),
      (std::vector<std::string>{"Identify", "PrepareForBackup", "PrepareForSnapshot", "Freeze",
                                "Thaw", "PostSnapshot", "BackupComplete", "BackupShutdown"}));
}

// What a writer program said it received in each PrepareForBackup (--report).
std::vector<json> Reports(const std::string& path) {
  std::vector<json> v;
  for (const auto& line : Lines(path)) v.push_back(json::parse(line));
  return v;
}

// The component of writer `writer` in a stored backup's BCD (null if none).
json ComponentOf(const json& record, const std::string& writer) {
  for (const auto& c : record["vss"]["bcd"]["components"])
    if (c["writer_name"] == writer) return c;
  return nullptr;
}

TEST_F(WritersCliTest, EachWriterProgramGetsBackTheStampItSetOnItsParentUnlessItKeepsNone) {
  // keeper declares VSS_BS_TIMESTAMPED (test_writer_app's default), plain
  // does not; both set a stamp in PostSnapshot and report what
  // PrepareForBackup received.
  const std::string keeper_report = dir_ / "keeper.report", plain_report = dir_ / "plain.report";
  App keeper(state_.writer_dir(), "keeper", dir_ / "keeper.log", volume_,
             {"--report", keeper_report});
  App plain(state_.writer_dir(), "plain", dir_ / "plain.log", volume_,
            {"--schema", "0", "--report", plain_report});
  std::vector<json> records;
  std::vector<std::string> errs;
  for (const char* type : {"full", "incremental", "differential", "incremental"}) {
    auto r = Backup({"--json", "--type", type});
    ASSERT_EQ(r.exit_code, 0) << type << ": " << r.err;
    errs.push_back(r.err);
    auto show = Gnomon({"--repo", repo_, "show", "--json", json::parse(r.out)["id"]});
    ASSERT_EQ(show.exit_code, 0) << show.err;
    records.push_back(json::parse(show.out));
  }
  std::vector<std::string> keeper_got, plain_got;
  for (const auto& j : Reports(keeper_report)) keeper_got.push_back(j["previous_stamp"]);
  for (const auto& j : Reports(plain_report)) plain_got.push_back(j["previous_stamp"]);
  // The full has no parent; the incremental builds on the full, the
  // differential on the full, the last incremental on the first one (the
  // newest full or incremental): each gets that parent's stamp, exactly.
  EXPECT_EQ(keeper_got, (std::vector<std::string>{"", "stamp from keeper for full",
                                                  "stamp from keeper for full",
                                                  "stamp from keeper for incremental"}));
  // The stored BCDs agree: the stamp each backup kept is the one handed
  // back to the next that builds on it.
  const json full = ComponentOf(records[0], "keeper"), inc = ComponentOf(records[1], "keeper");
  EXPECT_EQ(full["backup_stamp"], "stamp from keeper for full");
  EXPECT_EQ(inc["previous_backup_stamp"], full["backup_stamp"]);
  EXPECT_EQ(inc["backup_stamp"], "stamp from keeper for incremental");
  EXPECT_EQ(ComponentOf(records[2], "keeper")["previous_backup_stamp"], full["backup_stamp"]);
  EXPECT_EQ(ComponentOf(records[3], "keeper")["previous_backup_stamp"], inc["backup_stamp"]);
  // A writer without VSS_BS_TIMESTAMPED: its stamps are not kept, so none
  // goes back; its status and the backup's warnings say why.
  EXPECT_EQ(plain_got, (std::vector<std::string>{"", "", "", ""}));
  for (const auto& rec : records) {
    const json c = ComponentOf(rec, "plain");
    ASSERT_FALSE(c.is_null()) << rec["vss"]["bcd"].dump();
    EXPECT_EQ(c["backup_stamp"], "");
    EXPECT_EQ(c["previous_backup_stamp"], "");
    bool said = false;
    for (const auto& st : rec["vss"]["writer_status"])
      if (st["name"] == "plain") {
        EXPECT_EQ(st["failure"], 0);
        said = st["message"].get<std::string>().find("VSS_BS_TIMESTAMPED") != std::string::npos;
      }
    EXPECT_TRUE(said) << rec["vss"]["writer_status"].dump();
  }
  EXPECT_NE(errs[0].find("writer 'plain': backup stamp ignored"), std::string::npos) << errs[0];
}

TEST_F(WritersCliTest, WriterOptionsReachTheNamedWriterAndOnesItDoesNotKnowFailTheBackup) {
  const std::string report = dir_ / "app.report";
  App app(state_.writer_dir(), "appdb", dir_ / "app.log", volume_,
          {"--options", "mode,level", "--report", report});
  // By name; the option comes before SOURCE and does not swallow it.
  auto r =
      Backup({"--json", "--writer-option", "appdb:mode=fast", "--writer-option", "appdb:level=3"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Reports(report).back()["options"], "mode=fast\nlevel=3\n");
  auto show = Gnomon({"--repo", repo_, "show", "--json", json::parse(r.out)["id"]});
  EXPECT_EQ(ComponentOf(json::parse(show.out), "appdb")["backup_options"], "mode=fast\nlevel=3\n");
  // Other writers' components get none.
  EXPECT_EQ(ComponentOf(json::parse(show.out), "Volume Image Writer")["backup_options"], "");
  // By class id, as `gnomon writers` shows it.
  std::string cls;
  for (const auto& w : json::parse(Gnomon({"writers", "--json"}).out))
    if (w["name"] == "appdb") cls = w["class_id"];
  ASSERT_FALSE(cls.empty());
  r = Backup({"--writer-option", "{" + cls + "}:mode=slow"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Reports(report).back()["options"], "mode=slow\n");
  const size_t stored = json::parse(Gnomon({"--repo", repo_, "list", "--json"}).out).size();
  ASSERT_EQ(stored, 2u);

  // An option the writer does not know: it fails PrepareForBackup, the
  // backup fails with exit 4 naming the option, and nothing is stored.
  r = Backup({"--writer-option", "appdb:colour=blue"});
  EXPECT_EQ(r.exit_code, 4) << r.err;
  EXPECT_NE(r.err.find("unknown backup option 'colour'"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("mode=TEXT, level=TEXT"), std::string::npos) << r.err;
  // A writer that does not exist, or an option that is not WRITER:KEY=VALUE,
  // is a usage error; the message names the writers there are.
  r = Backup({"--writer-option", "mysql:mode=fast"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("no writer is named 'mysql'"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("'appdb' {" + cls + "}"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("'Volume Image Writer'"), std::string::npos) << r.err;
  for (const char* bad : {"appdb", "appdb:mode", ":mode=fast"})
    EXPECT_EQ(Backup({"--writer-option", bad}).exit_code, 2) << bad;
  EXPECT_EQ(json::parse(Gnomon({"--repo", repo_, "list", "--json"}).out).size(), stored);
}

TEST_F(WritersCliTest, WritersListsEveryKindAndWarnsOfAStaleSocket) {
  Script("pre-freeze", "exit 0\n");
  App app(state_.writer_dir(), "appdb", dir_ / "app.log", volume_);
  // A socket file nobody listens on, as a killed writer leaves.
  ASSERT_EQ(test::Sh("python3 -c \"import socket; s=socket.socket(socket.AF_UNIX); s.bind('" +
                     state_.writer_dir() + "/dead.sock')\"")
                .exit_code,
            0);
  auto r = Gnomon({"writers", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::map<std::string, std::string> kinds;
  for (const auto& w : json::parse(r.out)) kinds[w["name"]] = w["kind"];
  EXPECT_EQ(kinds["appdb"], "process");
  EXPECT_EQ(kinds["script pre-freeze"], "script");
  EXPECT_EQ(kinds.size(), 4u);  // and the two built-in writers
  EXPECT_NE(r.err.find("dead.sock: no writer is listening"), std::string::npos) << r.err;
  auto text = Gnomon({"writers"});
  EXPECT_NE(text.out.find("Kind: process"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("appdb.sock"), std::string::npos) << text.out;
}

}  // namespace
}  // namespace gnomon
