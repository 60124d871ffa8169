// The VSS requester and coordinator: event order, vetoes at every phase,
// timeouts, bad-state calls, aborts, a writer that throws or hangs. Test
// writers record what they receive; the provider is the real offline
// provider on a scratch file (with a slow-commit decorator where a test needs
// the hold window to overrun).
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <future>
#include <map>
#include <mutex>
#include <thread>

#include "tests/test_util.h"
#include "vss/backup_components.h"
#include "vss/component_sets.h"
#include "vss/offline_provider.h"
#include "vss/reflink_provider.h"
#include "vss/volume_stamp.h"
#include "vss/volume_writer.h"

namespace gnomon::vss {
namespace {

using Clock = std::chrono::steady_clock;
using test::TempDir;

struct EventLog {
  std::mutex mu;
  std::vector<std::string> events;  // "writer:Event"
  std::map<std::string, Clock::time_point> when;
  void Add(const std::string& w, const std::string& e) {
    std::lock_guard<std::mutex> g(mu);
    events.push_back(w + ":" + e);
    when[w + ":" + e] = Clock::now();
  }
  std::vector<std::string> Of(const std::string& w) {
    std::lock_guard<std::mutex> g(mu);
    std::vector<std::string> out;
    for (auto& e : events)
      if (e.rfind(w + ":", 0) == 0) out.push_back(e.substr(w.size() + 1));
    return out;
  }
  bool Has(const std::string& w, const std::string& e) {
    auto v = Of(w);
    return std::find(v.begin(), v.end(), e) != v.end();
  }
};

enum class Act { kOk, kVeto, kThrow, kHang, kNonFatal };

class TestWriter : public Writer {
 public:
  TestWriter(std::string name, ApplicationLevel level, std::shared_ptr<EventLog> log,
             std::string volume, uint32_t freeze_ms = 60000)
      : log_(std::move(log)), volume_(std::move(volume)) {
    Guid cls = Guid::Random();
    Initialize(cls, name, UsageType::kUserData, SourceType::kTransactedDb, level, freeze_ms);
  }
  std::map<std::string, Act> acts;
  std::map<std::string, int> hang_ms;
  uint32_t mask = fsbt::kDefault;
  uint32_t backup_schema = schema::kTimestamped | schema::kIncremental;
  // What the writer saw, for assertions.
  BackupType seen_type = BackupType::kUndefined;
  std::string seen_previous_stamp, seen_options;
  bool seen_path_affected = false;
  Guid seen_set_id;
  HResult second_metadata = S_OK_, bad_failure_code = S_OK_, edit_in_complete = S_OK_;

  bool OnIdentify(WriterMetadata* md) override {
    if (!Do("Identify")) return false;
    ComponentInfo c;
    c.type = ComponentType::kDatabase;
    c.logical_path = "app";
    c.name = "db";
    FileSpec f;
    f.path = volume_;
    f.mask = mask;
    c.files.push_back(f);
    md->components.push_back(c);
    md->backup_schema = backup_schema;
    return true;
  }
  bool OnPrepareBackup(WriterComponents* comps) override {
    seen_type = GetBackupType();
    seen_path_affected = IsPathAffected(volume_);
    for (auto& c : *comps) {
      seen_previous_stamp = c.GetPreviousBackupStamp();
      seen_options = c.GetBackupOptions();
      c.SetBackupMetadata("md-1");
      second_metadata = c.SetBackupMetadata("md-2");
    }
    bad_failure_code = SetWriterFailure(E_FAIL_);  // not one of the five
    return Do("PrepareForBackup");
  }
  bool OnPrepareSnapshot() override { return Do("PrepareForSnapshot"); }
  bool OnFreeze() override {
    seen_set_id = GetCurrentSnapshotSetId();
    return Do("Freeze");
  }
  bool OnThaw() override { return Do("Thaw"); }
  bool OnPostSnapshot(WriterComponents* comps) override {
    for (auto& c : *comps) {
      c.SetBackupStamp("stamp-" + name());
      c.AddPartialFile(volume_, "db", "0:4096,8192:4096", "pages");
      c.AddDifferencedFilesByLastModifyTime("/var/log", "*.log", true, 1700000000);
    }
    return Do("PostSnapshot");
  }
  bool OnAbort() override { return Do("Abort"); }
  bool OnBackupComplete(WriterComponents* comps) override {
    for (auto& c : *comps) edit_in_complete = c.SetBackupStamp("too late");
    return Do("BackupComplete");
  }
  bool OnBackupShutdown(const Guid&) override { return Do("BackupShutdown"); }

 private:
  bool Do(const std::string& ev) {
    log_->Add(name(), ev);
    switch (acts.count(ev) ? acts[ev] : Act::kOk) {
      case Act::kOk:
        return true;
      case Act::kVeto:
        SetWriterFailure(VSS_E_WRITERERROR_RETRYABLE, name() + " vetoes " + ev);
        return false;
      case Act::kNonFatal:
        SetWriterFailure(VSS_E_WRITERERROR_OUTOFRESOURCES, "low on memory");
        return true;
      case Act::kThrow:
        throw std::runtime_error(name() + " blew up in " + ev);
      case Act::kHang:
        std::this_thread::sleep_for(
            std::chrono::milliseconds(hang_ms.count(ev) ? hang_ms[ev] : 3000));
        return true;
    }
    return true;
  }
  std::shared_ptr<EventLog> log_;
  std::string volume_;
};

class SlowCommitProvider : public OfflineProvider {
 public:
  explicit SlowCommitProvider(int ms) : ms_(ms) {}
  HResult CommitSnapshots(const Guid& set) override {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms_));
    return OfflineProvider::CommitSnapshots(set);
  }

 private:
  int ms_;
};

class RequesterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    volume_ = dir_ / "volume.img";
    test::WriteFile(volume_, test::RandomBytes(65536, 1));
    log_ = std::make_shared<EventLog>();
    opt_.runtime_dir = dir_ / "run";
  }
  std::shared_ptr<TestWriter> W(const std::string& name,
                                ApplicationLevel l = ApplicationLevel::kFrontEnd,
                                uint32_t freeze_ms = 60000) {
    auto w = std::make_shared<TestWriter>(name, l, log_, volume_, freeze_ms);
    writers_.push_back(w);
    return w;
  }
  std::unique_ptr<BackupComponents> Make(std::shared_ptr<Provider> p = nullptr) {
    if (!p) p = std::make_shared<OfflineProvider>();
    std::vector<std::shared_ptr<Writer>> ws(writers_.begin(), writers_.end());
    return std::make_unique<BackupComponents>(ws, std::vector<std::shared_ptr<Provider>>{p}, opt_);
  }
  // The canonical sequence up to and including PrepareForBackup + status.
  void Prepare(BackupComponents* bc, BackupType type = BackupType::kFull) {
    ASSERT_EQ(bc->InitializeForBackup(), S_OK_);
    ASSERT_EQ(bc->SetBackupState(true, false, type), S_OK_);
    std::shared_ptr<Async> a;
    ASSERT_EQ(bc->GatherWriterMetadata(&a), S_OK_);
    ASSERT_EQ(WaitForAsync(a), S_OK_);
    for (size_t i = 0; i < bc->GetWriterMetadataCount(); ++i) {
      const WriterMetadata* md = bc->GetWriterMetadata(i);
      for (const auto& c : md->components)
        ASSERT_EQ(bc->AddComponent(md->instance_id, md->class_id, c.type, c.logical_path, c.name),
                  S_OK_);
    }
    ASSERT_EQ(bc->StartSnapshotSet(&set_), S_OK_);
    ASSERT_EQ(bc->AddToSnapshotSet(volume_, "", &snap_), S_OK_);
    ASSERT_EQ(bc->PrepareForBackup(&a), S_OK_);
    ASSERT_EQ(WaitForAsync(a), S_OK_);
    ASSERT_EQ(bc->GatherWriterStatus(&a), S_OK_);
  }
  HResult Snapshot(BackupComponents* bc) {
    std::shared_ptr<Async> a;
    HResult hr = bc->DoSnapshotSet(&a);
    if (hr != S_OK_) return hr;
    return WaitForAsync(a);
  }
  WriterStatus StatusOf(BackupComponents* bc, const std::string& name) {
    std::shared_ptr<Async> a;
    EXPECT_EQ(bc->GatherWriterStatus(&a), S_OK_);
    for (size_t i = 0; i < bc->GetWriterStatusCount(); ++i) {
      WriterStatus s;
      bc->GetWriterStatus(i, &s);
      if (s.name == name) return s;
    }
    ADD_FAILURE() << "no status for writer " << name;
    return {};
  }
  std::vector<std::string> Events(BackupComponents* bc) {
    std::vector<std::string> out;
    for (auto& e : bc->event_log()) out.push_back(e.event + "/" + e.target);
    return out;
  }

  TempDir dir_;
  std::string volume_;
  std::shared_ptr<EventLog> log_;
  RequesterOptions opt_;
  std::vector<std::shared_ptr<TestWriter>> writers_;
  Guid set_, snap_;
};

size_t IndexOf(const std::vector<std::string>& v, const std::string& s) {
  auto it = std::find(v.begin(), v.end(), s);
  EXPECT_NE(it, v.end()) << s << " was never delivered";
  return static_cast<size_t>(it - v.begin());
}

TEST_F(RequesterTest, FullBackupFollowsTheSeedPagesEventOrder) {
  W("front", ApplicationLevel::kFrontEnd);
  W("back", ApplicationLevel::kBackEnd);
  W("sys", ApplicationLevel::kSystem);
  std::vector<std::string> ev;
  {
    auto bc = Make();
    Prepare(bc.get());
    for (auto& w : {"front", "back", "sys"})
      EXPECT_EQ(StatusOf(bc.get(), w).state, WriterState::kStable);
    ASSERT_EQ(Snapshot(bc.get()), S_OK_) << bc->last_error();
    for (auto& w : {"front", "back", "sys"})
      EXPECT_EQ(StatusOf(bc.get(), w).state, WriterState::kWaitingForBackupComplete);
    SnapshotProperties p;
    ASSERT_EQ(bc->GetSnapshotProperties(snap_, &p), S_OK_);
    EXPECT_EQ(p.device, volume_);
    for (auto& c : bc->document().components)
      bc->SetBackupSucceeded(c.instance_id, c.class_id, c.type, c.logical_path, c.name, true);
    std::shared_ptr<Async> a;
    ASSERT_EQ(bc->BackupComplete(&a), S_OK_);
    ASSERT_EQ(WaitForAsync(a), S_OK_);
    for (auto& w : {"front", "back", "sys"})
      EXPECT_EQ(StatusOf(bc.get(), w).state, WriterState::kStable);
    bc->Release();
    ev = Events(bc.get());
  }
  // After release: BackupShutdown reached every writer, the snapshot is gone.
  for (auto& w : {"front", "back", "sys"}) {
    EXPECT_EQ(log_->Of(w), (std::vector<std::string>{
                               "Identify", "PrepareForBackup", "PrepareForSnapshot", "Freeze",
                               "Thaw", "PostSnapshot", "BackupComplete", "BackupShutdown"}))
        << w;
  }
  // The seed page's order, with the providers' steps in between.
  const std::vector<std::string> phases = {"PrepareForBackup/front",
                                           "PrepareForSnapshot/front",
                                           "BeginPrepareSnapshot/offline",
                                           "EndPrepareSnapshots/offline",
                                           "Freeze/front",
                                           "Freeze/back",
                                           "Freeze/sys",
                                           "PreCommitSnapshots/offline",
                                           "CommitSnapshots/offline",
                                           "PostCommitSnapshots/offline",
                                           "Thaw/sys",
                                           "Thaw/back",
                                           "Thaw/front",
                                           "PreFinalCommitSnapshots/offline",
                                           "PostSnapshot/front",
                                           "PostFinalCommitSnapshots/offline",
                                           "BackupComplete/front",
                                           "BackupShutdown/front",
                                           "DeleteSnapshot/offline"};
  for (size_t i = 1; i < phases.size(); ++i)
    EXPECT_LT(IndexOf(ev, phases[i - 1]), IndexOf(ev, phases[i]))
        << phases[i - 1] << " should come before " << phases[i];
  // Every writer saw the whole set id during Freeze and a full backup.
  for (auto& w : writers_) {
    EXPECT_EQ(w->seen_set_id, set_);
    EXPECT_EQ(w->seen_type, BackupType::kFull);
    EXPECT_TRUE(w->seen_path_affected);
  }
}

TEST_F(RequesterTest, DoSnapshotSetIsSkippedWhenNoFileSetNeedsASnapshot) {
  auto w = W("app");
  w->mask = fsbt::kAllBackupRequired;  // no "snapshot required" bit
  {
    auto bc = Make();
    Prepare(bc.get());
    EXPECT_FALSE(bc->IsSnapshotRequired());
    for (auto& c : bc->document().components)
      EXPECT_EQ(
          bc->SetBackupSucceeded(c.instance_id, c.class_id, c.type, c.logical_path, c.name, true),
          S_OK_);
    std::shared_ptr<Async> a;
    ASSERT_EQ(bc->BackupComplete(&a), S_OK_);
    ASSERT_EQ(WaitForAsync(a), S_OK_);
  }
  EXPECT_EQ(log_->Of("app"), (std::vector<std::string>{"Identify", "PrepareForBackup",
                                                       "BackupComplete", "BackupShutdown"}));
}

TEST_F(RequesterTest, SkippingIsRefusedWhenASnapshotIsRequired) {
  auto w = W("app");
  w->mask = fsbt::kIncrementalSnapshotRequired;
  auto bc = Make();
  Prepare(bc.get(), BackupType::kIncremental);
  EXPECT_TRUE(bc->IsSnapshotRequired());
  std::shared_ptr<Async> a;
  EXPECT_EQ(bc->BackupComplete(&a), VSS_E_BAD_STATE);
}

TEST_F(RequesterTest, AStampFromAWriterWithoutTimestampedIsIgnoredAndSaidSo) {
  auto plain = W("plain");
  plain->backup_schema = schema::kIncremental;  // no VSS_BS_TIMESTAMPED
  W("keeper");
  auto bc = Make();
  Prepare(bc.get());
  ASSERT_EQ(Snapshot(bc.get()), S_OK_) << bc->last_error();
  std::map<std::string, std::string> stamps;
  for (const auto& c : bc->document().components) stamps[c.writer_name] = c.backup_stamp;
  EXPECT_EQ(stamps["plain"], "") << "kept a stamp VSS would not keep";
  EXPECT_EQ(stamps["keeper"], "stamp-keeper");
  // Said in the writer's status, which fails nothing, and in the log.
  WriterStatus st = StatusOf(bc.get(), "plain");
  EXPECT_EQ(st.failure, S_OK_);
  EXPECT_EQ(st.state, WriterState::kWaitingForBackupComplete);
  EXPECT_NE(st.message.find("does not declare VSS_BS_TIMESTAMPED"), std::string::npos)
      << st.message;
  EXPECT_NE(st.message.find("PostSnapshot"), std::string::npos) << st.message;
  EXPECT_EQ(StatusOf(bc.get(), "keeper").message, "");
  auto ev = Events(bc.get());
  EXPECT_EQ(std::count(ev.begin(), ev.end(), "IgnoreBackupStamp/plain app\\db"), 1);
}

TEST_F(RequesterTest, StampsOptionsAndMetadataFlowThroughTheBcd) {
  auto w = W("app");
  auto bc = Make();
  ASSERT_EQ(bc->InitializeForBackup(), S_OK_);
  ASSERT_EQ(bc->SetBackupState(true, false, BackupType::kIncremental), S_OK_);
  std::shared_ptr<Async> a;
  ASSERT_EQ(bc->GatherWriterMetadata(&a), S_OK_);
  WaitForAsync(a);
  const WriterMetadata* md = bc->GetWriterMetadata(0);
  ASSERT_NE(md, nullptr);
  EXPECT_EQ(bc->SetBackupOptions(md->class_id, ComponentType::kDatabase, "app", "db", "x"),
            VSS_E_BAD_STATE);  // before StartSnapshotSet
  ASSERT_EQ(bc->AddComponent(md->instance_id, md->class_id, ComponentType::kDatabase, "app", "db"),
            S_OK_);
  EXPECT_EQ(bc->AddComponent(md->instance_id, md->class_id, ComponentType::kDatabase, "app", "db"),
            VSS_E_OBJECT_ALREADY_EXISTS);
  EXPECT_EQ(bc->AddComponent(md->instance_id, md->class_id, ComponentType::kDatabase, "app", "x"),
            VSS_E_OBJECT_NOT_FOUND);
  ASSERT_EQ(bc->StartSnapshotSet(&set_), S_OK_);
  ASSERT_EQ(bc->AddToSnapshotSet(volume_, "", &snap_), S_OK_);
  EXPECT_EQ(bc->SetBackupOptions(md->class_id, ComponentType::kDatabase, "app", "nope", "x"),
            VSS_E_OBJECT_NOT_FOUND);
  ASSERT_EQ(bc->SetBackupOptions(md->class_id, ComponentType::kDatabase, "app", "db", "opt=1"),
            S_OK_);
  ASSERT_EQ(
      bc->SetPreviousBackupStamp(md->class_id, ComponentType::kDatabase, "app", "db", "stamp-prev"),
      S_OK_);
  ASSERT_EQ(bc->PrepareForBackup(&a), S_OK_);
  WaitForAsync(a);
  EXPECT_EQ(w->seen_previous_stamp, "stamp-prev");
  EXPECT_EQ(w->seen_options, "opt=1");
  EXPECT_EQ(w->seen_type, BackupType::kIncremental);
  EXPECT_EQ(w->second_metadata, VSS_E_OBJECT_ALREADY_EXISTS);
  EXPECT_EQ(w->bad_failure_code, E_INVALIDARG_);
  ASSERT_EQ(Snapshot(bc.get()), S_OK_);
  ASSERT_EQ(bc->BackupComplete(&a), S_OK_);
  WaitForAsync(a);
  EXPECT_EQ(w->edit_in_complete, VSS_E_BAD_STATE);  // BCD is read-only by then
  const auto& rec = bc->document().components.at(0);
  EXPECT_EQ(rec.backup_stamp, "stamp-app");
  EXPECT_EQ(rec.backup_metadata, "md-1");
  ASSERT_EQ(rec.partial_files.size(), 1u);
  EXPECT_EQ(rec.partial_files[0].ranges, "0:4096,8192:4096");
  ASSERT_EQ(rec.differenced_files.size(), 1u);
  EXPECT_EQ(rec.differenced_files[0].last_modify_time, 1700000000);
  // Both documents survive a JSON round trip.
  BackupComponentsDocument back;
  Status s = BackupComponentsDocument::FromJson(bc->document().ToJson(), &back);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(back.components.at(0).backup_stamp, "stamp-app");
  EXPECT_EQ(back.components.at(0).partial_files.at(0).metadata, "pages");
  EXPECT_EQ(back.components.at(0).differenced_files.at(0).spec, "*.log");
  EXPECT_EQ(back.snapshot_set_id, set_);
  EXPECT_EQ(back.backup_type, BackupType::kIncremental);
  WriterMetadata wmd;
  s = WriterMetadata::FromJson(md->ToJson(), &wmd);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(wmd.components.at(0).files.at(0).path, volume_);
  EXPECT_EQ(WriterMetadata::FromJson(nlohmann::json{{"schema", "other/9"}}, &wmd).code(),
            Status::Code::kUnsupported);
}

TEST_F(RequesterTest, CallsOutOfOrderReturnBadState) {
  W("app");
  auto bc = Make();
  std::shared_ptr<Async> a;
  Guid g;
  EXPECT_EQ(bc->AbortBackup(), VSS_E_BAD_STATE);  // uninitialized
  EXPECT_EQ(bc->PrepareForBackup(&a), VSS_E_BAD_STATE);
  EXPECT_EQ(bc->GatherWriterMetadata(&a), VSS_E_BAD_STATE);
  EXPECT_EQ(bc->StartSnapshotSet(&g), VSS_E_BAD_STATE);
  ASSERT_EQ(bc->InitializeForBackup(), S_OK_);
  EXPECT_EQ(bc->InitializeForBackup(), VSS_E_BAD_STATE);
  EXPECT_EQ(bc->SetContext(ctx::kAll), E_INVALIDARG_);
  ASSERT_EQ(bc->SetContext(ctx::kBackup), S_OK_);
  EXPECT_EQ(bc->SetContext(ctx::kBackup), VSS_E_BAD_STATE);  // at most once
  EXPECT_EQ(bc->StartSnapshotSet(&g), VSS_E_BAD_STATE);      // before metadata
  EXPECT_EQ(bc->DoSnapshotSet(&a), VSS_E_BAD_STATE);
  ASSERT_EQ(bc->GatherWriterMetadata(&a), S_OK_);
  WaitForAsync(a);
  EXPECT_EQ(bc->GatherWriterMetadata(&a), VSS_E_BAD_STATE);  // once per session
  EXPECT_EQ(bc->AddToSnapshotSet(volume_, "", &g), VSS_E_BAD_STATE);
  ASSERT_EQ(bc->StartSnapshotSet(&set_), S_OK_);
  EXPECT_EQ(bc->AddToSnapshotSet(dir_ / "missing", "", &g), VSS_E_OBJECT_NOT_FOUND);
  EXPECT_EQ(bc->AddToSnapshotSet(volume_, "nosuch", &g), VSS_E_PROVIDER_NOT_REGISTERED);
  ASSERT_EQ(bc->AddToSnapshotSet(volume_, "offline", &snap_), S_OK_);
  EXPECT_EQ(bc->AddToSnapshotSet(volume_, "", &g), VSS_E_OBJECT_ALREADY_EXISTS);
  // SetBackupState is mandatory before PrepareForBackup.
  EXPECT_EQ(bc->PrepareForBackup(&a), VSS_E_BAD_STATE);
  EXPECT_EQ(bc->DoSnapshotSet(&a), VSS_E_BAD_STATE);
  SnapshotProperties p;
  EXPECT_EQ(bc->GetSnapshotProperties(snap_, &p), VSS_E_BAD_STATE);
}

TEST_F(RequesterTest, BackupCompleteAfterAFailedSnapshotIsBadState) {
  auto w = W("app");
  w->acts["Freeze"] = Act::kVeto;
  auto bc = Make();
  Prepare(bc.get());
  EXPECT_EQ(Snapshot(bc.get()), VSS_E_WRITERERROR_RETRYABLE);
  std::shared_ptr<Async> a;
  EXPECT_EQ(bc->BackupComplete(&a), VSS_E_BAD_STATE);  // bareos/bareos#1923
  for (auto& c : bc->document().components)
    EXPECT_EQ(
        bc->SetBackupSucceeded(c.instance_id, c.class_id, c.type, c.logical_path, c.name, true),
        VSS_E_BAD_STATE);
  EXPECT_EQ(bc->AbortBackup(), S_OK_);  // always allowed after a failed set
}

// A veto at each phase, and what the requester and the other writer see.
struct VetoCase {
  const char* event;
  HResult do_snapshot;  // S_OK_ if the set must still be created
  WriterState state;
  bool others_aborted;
};

class VetoTest : public RequesterTest, public ::testing::WithParamInterface<VetoCase> {};

TEST_P(VetoTest, VetoAtPhase) {
  const VetoCase& c = GetParam();
  auto bad = W("bad", ApplicationLevel::kBackEnd);
  auto good = W("good", ApplicationLevel::kFrontEnd);
  bad->acts[c.event] = Act::kVeto;
  auto bc = Make();
  Prepare(bc.get());
  if (std::string(c.event) == "PrepareForBackup") {
    WriterStatus s = StatusOf(bc.get(), "bad");
    EXPECT_EQ(s.state, WriterState::kFailedAtPrepareBackup);
    EXPECT_EQ(s.failure, VSS_E_WRITERERROR_RETRYABLE);
    EXPECT_NE(s.message.find("vetoes"), std::string::npos);
  }
  HResult hr = Snapshot(bc.get());
  EXPECT_EQ(hr, c.do_snapshot) << DescribeHResult(hr) << " " << bc->last_error();
  WriterStatus s = StatusOf(bc.get(), "bad");
  EXPECT_EQ(s.state, c.state) << WriterStateName(s.state);
  EXPECT_EQ(s.failure, VSS_E_WRITERERROR_RETRYABLE);
  EXPECT_EQ(log_->Has("good", "Abort"), c.others_aborted);
  if (hr != S_OK_) {
    EXPECT_NE(bc->last_error().find("bad"), std::string::npos) << bc->last_error();
    EXPECT_FALSE(log_->Has("good", "PostSnapshot"));
  }
  if (std::string(c.event) == "PrepareForBackup") {
    // The requester went on without it.
    EXPECT_FALSE(log_->Has("bad", "PrepareForSnapshot"))
        << "a writer that failed PrepareForBackup gets no further events";
  }
  if (std::string(c.event) == "PrepareForSnapshot") {
    EXPECT_FALSE(log_->Has("good", "Freeze"));
  }
}

INSTANTIATE_TEST_SUITE_P(
    EveryPhase, VetoTest,
    ::testing::Values(
        VetoCase{"PrepareForBackup", S_OK_, WriterState::kFailedAtPrepareBackup, false},
        VetoCase{"PrepareForSnapshot", VSS_E_WRITERERROR_RETRYABLE,
                 WriterState::kFailedAtPrepareSnapshot, true},
        VetoCase{"Freeze", VSS_E_WRITERERROR_RETRYABLE, WriterState::kFailedAtFreeze, true},
        VetoCase{"Thaw", VSS_E_WRITERERROR_RETRYABLE, WriterState::kFailedAtThaw, true},
        VetoCase{"PostSnapshot", S_OK_, WriterState::kFailedAtPostSnapshot, false}),
    [](const auto& info) { return std::string(info.param.event); });

TEST_F(RequesterTest, IdentifyFailureLeavesTheWriterOut) {
  auto bad = W("bad");
  W("good");
  bad->acts["Identify"] = Act::kVeto;
  auto bc = Make();
  Prepare(bc.get());
  EXPECT_EQ(bc->GetWriterMetadataCount(), 1u);
  EXPECT_EQ(bc->GetWriterStatusCount(), 1u);
  EXPECT_EQ(Snapshot(bc.get()), S_OK_);
  EXPECT_EQ(log_->Of("bad"), std::vector<std::string>{"Identify"});
}

TEST_F(RequesterTest, BackupCompleteVetoIsReported) {
  auto bad = W("bad");
  bad->acts["BackupComplete"] = Act::kVeto;
  auto bc = Make();
  Prepare(bc.get());
  ASSERT_EQ(Snapshot(bc.get()), S_OK_);
  std::shared_ptr<Async> a;
  ASSERT_EQ(bc->BackupComplete(&a), S_OK_);
  WaitForAsync(a);
  EXPECT_EQ(StatusOf(bc.get(), "bad").state, WriterState::kFailedAtBackupComplete);
}

TEST_F(RequesterTest, NonFatalFailureIsReportedAndTheWriterCarriesOn) {
  auto w = W("app");
  w->acts["Freeze"] = Act::kNonFatal;
  auto bc = Make();
  Prepare(bc.get());
  EXPECT_EQ(Snapshot(bc.get()), S_OK_);
  WriterStatus s = StatusOf(bc.get(), "app");
  EXPECT_EQ(s.state, WriterState::kWaitingForBackupComplete);
  EXPECT_EQ(s.failure, VSS_E_WRITERERROR_OUTOFRESOURCES);
}

TEST_F(RequesterTest, AWriterThatThrowsIsAFailedWriter) {
  auto bad = W("bad", ApplicationLevel::kBackEnd);
  W("good");
  bad->acts["Freeze"] = Act::kThrow;
  auto bc = Make();
  Prepare(bc.get());
  EXPECT_EQ(Snapshot(bc.get()), VSS_E_WRITERERROR_NONRETRYABLE);
  WriterStatus s = StatusOf(bc.get(), "bad");
  EXPECT_EQ(s.state, WriterState::kFailedAtFreeze);
  EXPECT_NE(s.message.find("blew up"), std::string::npos) << s.message;
  EXPECT_TRUE(log_->Has("good", "Abort"));
}

TEST_F(RequesterTest, AHungHandlerIsNotRespondingAndTheBackupGoesOnFailing) {
  opt_.event_timeout_ms = 300;
  auto bad = W("bad");
  W("good");
  bad->acts["PrepareForSnapshot"] = Act::kHang;
  bad->hang_ms["PrepareForSnapshot"] = 2000;
  auto bc = Make();
  Prepare(bc.get());
  auto t0 = Clock::now();
  EXPECT_EQ(Snapshot(bc.get()), VSS_E_WRITER_NOT_RESPONDING);
  EXPECT_LT(Clock::now() - t0, std::chrono::milliseconds(1500));
  WriterStatus s = StatusOf(bc.get(), "bad");
  EXPECT_EQ(s.state, WriterState::kFailedAtPrepareSnapshot);
  EXPECT_EQ(s.failure, VSS_E_WRITER_NOT_RESPONDING);
  EXPECT_TRUE(log_->Has("good", "Abort"));
  EXPECT_FALSE(log_->Has("bad", "Abort")) << "a writer that does not respond gets no more events";
}

TEST_F(RequesterTest, FreezeThatNeverReturnsTimesOutWithinTheFreezeWindow) {
  auto bad = W("bad", ApplicationLevel::kBackEnd, 300);
  W("good", ApplicationLevel::kFrontEnd);
  bad->acts["Freeze"] = Act::kHang;
  bad->hang_ms["Freeze"] = 2000;
  auto bc = Make();
  Prepare(bc.get());
  auto t0 = Clock::now();
  EXPECT_EQ(Snapshot(bc.get()), VSS_E_WRITERERROR_TIMEOUT);
  // The frozen front-end writer was released well before the hung one woke.
  ASSERT_TRUE(log_->Has("good", "Abort"));
  EXPECT_LT(log_->when["good:Abort"] - t0, std::chrono::milliseconds(1200));
  WriterStatus s = StatusOf(bc.get(), "bad");
  EXPECT_EQ(s.state, WriterState::kFailedAtFreeze);
  EXPECT_EQ(s.failure, VSS_E_WRITERERROR_TIMEOUT);
  EXPECT_FALSE(log_->Has("good", "Thaw"));
}

TEST_F(RequesterTest, FreezeWindowRunningOutBeforeThawAbortsAtOnce) {
  // Freeze returns, but the provider commit outlasts the writer's window:
  // the watchdog aborts (thaws) while the commit is still running.
  auto w = W("app", ApplicationLevel::kFrontEnd, 300);
  opt_.hold_window_ms = 10000;
  auto bc = Make(std::make_shared<SlowCommitProvider>(1500));
  Prepare(bc.get());
  auto t0 = Clock::now();
  HResult hr = Snapshot(bc.get());
  EXPECT_EQ(hr, VSS_E_WRITERERROR_TIMEOUT) << DescribeHResult(hr);
  ASSERT_TRUE(log_->Has("app", "Abort"));
  EXPECT_LT(log_->when["app:Abort"] - t0, std::chrono::milliseconds(1000))
      << "the abort must not wait for the commit to end";
  WriterStatus s = StatusOf(bc.get(), "app");
  EXPECT_EQ(s.state, WriterState::kFailedAtThaw);
  EXPECT_EQ(s.failure, VSS_E_WRITERERROR_TIMEOUT);
  EXPECT_FALSE(log_->Has("app", "Thaw"));
}

TEST_F(RequesterTest, ProviderCommitOverrunningTheHoldWindowFailsTheSet) {
  W("app");
  opt_.hold_window_ms = 200;
  auto bc = Make(std::make_shared<SlowCommitProvider>(800));
  Prepare(bc.get());
  auto t0 = Clock::now();
  EXPECT_EQ(Snapshot(bc.get()), VSS_E_HOLD_WRITES_TIMEOUT);
  ASSERT_TRUE(log_->Has("app", "Abort"));
  EXPECT_LT(log_->when["app:Abort"] - t0, std::chrono::milliseconds(700));
  EXPECT_NE(bc->last_error().find("flush-and-hold"), std::string::npos) << bc->last_error();
}

// A provider whose commit outlasts the hold window and which notes whether
// AbortSnapshots came while CommitSnapshots was still running (the clone
// being made while its files are removed).
class OverrunningCommitProvider : public OfflineProvider {
 public:
  explicit OverrunningCommitProvider(int ms) : ms_(ms) {}
  HResult CommitSnapshots(const Guid& set) override {
    in_commit_ = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(ms_));
    HResult hr = OfflineProvider::CommitSnapshots(set);
    in_commit_ = false;
    return hr;
  }
  HResult AbortSnapshots(const Guid& set) override {
    if (in_commit_) abort_during_commit = true;
    ++aborts;
    return OfflineProvider::AbortSnapshots(set);
  }
  std::atomic<bool> abort_during_commit{false};
  std::atomic<int> aborts{0};

 private:
  int ms_;
  std::atomic<bool> in_commit_{false};
};

TEST_F(RequesterTest, HoldWindowOverrunThawsAtOnceAndAbortsProvidersAfterTheCommit) {
  W("app");
  opt_.hold_window_ms = 200;
  auto provider = std::make_shared<OverrunningCommitProvider>(1200);
  auto bc = Make(provider);
  Prepare(bc.get());
  auto t0 = Clock::now();
  EXPECT_EQ(Snapshot(bc.get()), VSS_E_HOLD_WRITES_TIMEOUT) << bc->last_error();
  ASSERT_TRUE(log_->Has("app", "Abort"));
  EXPECT_LT(log_->when["app:Abort"] - t0, std::chrono::milliseconds(800))
      << "thawing must not wait for the commit to end";
  EXPECT_FALSE(provider->abort_during_commit)
      << "AbortSnapshots ran while CommitSnapshots was still running";
  EXPECT_EQ(provider->aborts.load(), 1);
}

TEST_F(RequesterTest, FreezeWindowRunningOutDuringTheCommitAbortsProvidersAfterIt) {
  // The watchdog's abort, not the snapshot thread's: the same rule.
  W("app", ApplicationLevel::kFrontEnd, 300);
  opt_.hold_window_ms = 10000;
  auto provider = std::make_shared<OverrunningCommitProvider>(1200);
  auto bc = Make(provider);
  Prepare(bc.get());
  auto t0 = Clock::now();
  EXPECT_EQ(Snapshot(bc.get()), VSS_E_WRITERERROR_TIMEOUT) << bc->last_error();
  ASSERT_TRUE(log_->Has("app", "Abort"));
  EXPECT_LT(log_->when["app:Abort"] - t0, std::chrono::milliseconds(900))
      << "thawing must not wait for the commit to end";
  EXPECT_FALSE(provider->abort_during_commit)
      << "AbortSnapshots ran while CommitSnapshots was still running";
  EXPECT_EQ(provider->aborts.load(), 1);
}

// As SIGINT would: the cancel flag is set after the provider commit
// returned and before Thaw, and the watchdog aborts meanwhile. That abort
// used to deadlock the snapshot thread.
class CancelInPostCommitProvider : public OfflineProvider {
 public:
  explicit CancelInPostCommitProvider(std::shared_ptr<std::atomic<bool>> flag)
      : flag_(std::move(flag)) {}
  HResult PostCommitSnapshots(const Guid& set) override {
    flag_->store(true);
    std::this_thread::sleep_for(std::chrono::milliseconds(400));  // the watchdog aborts meanwhile
    return OfflineProvider::PostCommitSnapshots(set);
  }

 private:
  std::shared_ptr<std::atomic<bool>> flag_;
};

TEST_F(RequesterTest, AnAbortLandingAfterTheCommitBeforeThawDoesNotDeadlock) {
  auto cancel = std::make_shared<std::atomic<bool>>(false);
  opt_.cancel = cancel.get();
  W("front", ApplicationLevel::kFrontEnd);
  W("sys", ApplicationLevel::kSystem);
  auto bc = Make(std::make_shared<CancelInPostCommitProvider>(cancel));
  Prepare(bc.get());
  std::shared_ptr<Async> a;
  ASSERT_EQ(bc->DoSnapshotSet(&a), S_OK_);
  if (a->Wait(10000) != S_OK_) {
    // Deadlocked: destroying the session would wait for it forever. Leak it
    // (its provider keeps the flag its watchdog reads), so the test fails
    // instead of hanging.
    (void)bc.release();
    FAIL() << "DoSnapshotSet did not end within 10 s: the snapshot thread deadlocked";
  }
  EXPECT_TRUE(log_->Has("front", "Abort"));
  EXPECT_TRUE(log_->Has("sys", "Abort"));
  EXPECT_FALSE(log_->Has("front", "PostSnapshot"));
}

TEST_F(RequesterTest, AbortAfterEachPhase) {
  // After PrepareForBackup: every writer gets OnAbort.
  {
    W("a");
    auto bc = Make();
    Prepare(bc.get());
    EXPECT_EQ(bc->AbortBackup(), S_OK_);
    EXPECT_TRUE(log_->Has("a", "Abort"));
    std::shared_ptr<Async> a;
    EXPECT_EQ(bc->DoSnapshotSet(&a), VSS_E_BAD_STATE);
  }
  // After GatherWriterMetadata: nothing in progress, a no-op.
  {
    writers_.clear();
    W("b");
    auto bc = Make();
    bc->InitializeForBackup();
    bc->SetBackupState(true, false, BackupType::kFull);
    std::shared_ptr<Async> a;
    bc->GatherWriterMetadata(&a);
    WaitForAsync(a);
    EXPECT_EQ(bc->AbortBackup(), S_OK_);
    EXPECT_FALSE(log_->Has("b", "Abort"));
  }
  // After DoSnapshotSet: OnAbort never runs after PostSnapshot was delivered.
  {
    writers_.clear();
    W("c");
    auto bc = Make();
    Prepare(bc.get());
    ASSERT_EQ(Snapshot(bc.get()), S_OK_);
    EXPECT_EQ(bc->AbortBackup(), S_OK_);
    EXPECT_FALSE(log_->Has("c", "Abort"));
    std::shared_ptr<Async> a;
    EXPECT_EQ(bc->BackupComplete(&a), VSS_E_BAD_STATE);
  }
  // During DoSnapshotSet (a slow commit): cancelled, frozen writers thawed.
  {
    writers_.clear();
    W("d");
    auto bc = Make(std::make_shared<SlowCommitProvider>(600));
    Prepare(bc.get());
    std::shared_ptr<Async> a;
    ASSERT_EQ(bc->DoSnapshotSet(&a), S_OK_);
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    EXPECT_EQ(a->QueryStatus(), VSS_S_ASYNC_PENDING);
    EXPECT_EQ(bc->AbortBackup(), S_OK_);
    EXPECT_NE(a->QueryStatus(), VSS_S_ASYNC_FINISHED);
    EXPECT_TRUE(log_->Has("d", "Freeze"));
    EXPECT_TRUE(log_->Has("d", "Abort"));
    EXPECT_FALSE(log_->Has("d", "PostSnapshot"));
  }
  // A released session that never reached PrepareForBackup aborts nothing.
  EXPECT_EQ(log_->Of("b").back(), "BackupShutdown");
}

TEST_F(RequesterTest, ASecondSnapshotSetIsRefusedWhileOneIsInCreation) {
  W("a");
  auto first = Make();
  first->InitializeForBackup();
  std::shared_ptr<Async> a;
  first->GatherWriterMetadata(&a);
  WaitForAsync(a);
  Guid g1, g2;
  ASSERT_EQ(first->StartSnapshotSet(&g1), S_OK_);
  auto second = Make();
  second->InitializeForBackup();
  second->GatherWriterMetadata(&a);
  WaitForAsync(a);
  EXPECT_EQ(second->StartSnapshotSet(&g2), VSS_E_SNAPSHOT_SET_IN_PROGRESS);
  first.reset();  // released: the next set may start
  EXPECT_EQ(second->StartSnapshotSet(&g2), S_OK_);
}

TEST_F(RequesterTest, AsyncHandleWaitStatusAndCancel) {
  std::atomic<bool> release{false};
  auto a = Async::Start([&](const std::atomic<bool>& cancelled) {
    while (!release && !cancelled) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    return cancelled ? VSS_S_ASYNC_CANCELLED : S_OK_;
  });
  EXPECT_EQ(a->Wait(30), VSS_S_ASYNC_PENDING);
  EXPECT_EQ(a->QueryStatus(), VSS_S_ASYNC_PENDING);
  EXPECT_EQ(a->Cancel(), S_OK_);
  EXPECT_EQ(a->Wait(), S_OK_);  // ended, even though it did not succeed
  EXPECT_EQ(a->QueryStatus(), VSS_S_ASYNC_CANCELLED);
  EXPECT_EQ(a->Cancel(), VSS_S_ASYNC_CANCELLED);
  auto b = Async::Start([](const std::atomic<bool>&) { return VSS_E_PROVIDER_VETO; });
  EXPECT_EQ(WaitForAsync(b), VSS_E_PROVIDER_VETO);
}

TEST_F(RequesterTest, VolumeNoProviderSupportsListsEveryReason) {
  W("a");
  auto bc = Make();
  bc->InitializeForBackup();
  std::shared_ptr<Async> a;
  bc->GatherWriterMetadata(&a);
  WaitForAsync(a);
  ASSERT_EQ(bc->StartSnapshotSet(&set_), S_OK_);
  // A file someone holds open for writing: the offline provider refuses it.
  int fd = ::open(volume_.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(bc->AddToSnapshotSet(volume_, "", &snap_), VSS_E_VOLUME_NOT_SUPPORTED);
  EXPECT_NE(bc->last_error().find("offline provider"), std::string::npos) << bc->last_error();
  EXPECT_NE(bc->last_error().find("open for writing by pid"), std::string::npos)
      << bc->last_error();
  EXPECT_EQ(bc->AddToSnapshotSet(volume_, "offline", &snap_),
            VSS_E_VOLUME_NOT_SUPPORTED_BY_PROVIDER);
  ::close(fd);
  EXPECT_EQ(bc->AddToSnapshotSet(volume_, "", &snap_), S_OK_);
}

// Component selection (vss/component_sets.h): a writer laid out after
// Microsoft's "MyWriter" example (Working with Selectability for Backup),
// every file set on the test volume unless a test sets a mask.
class LayoutWriter : public TestWriter {
 public:
  using TestWriter::TestWriter;
  std::vector<ComponentInfo> layout;
  std::vector<std::string> seen_components;  // given at PrepareForBackup, "path\name"
  bool OnIdentify(WriterMetadata* md) override {
    if (!TestWriter::OnIdentify(md)) return false;
    md->components = layout;
    return true;
  }
  bool OnPrepareBackup(WriterComponents* comps) override {
    for (auto& c : *comps) seen_components.push_back(c.record().FullPath());
    return TestWriter::OnPrepareBackup(comps);
  }
};

class SelectionTest : public RequesterTest {
 protected:
  ComponentInfo Comp(const std::string& path, const std::string& name, bool selectable,
                     uint32_t mask = fsbt::kDefault) {
    ComponentInfo c;
    c.type = ComponentType::kFileGroup;
    c.logical_path = path;
    c.name = name;
    c.selectable = selectable;
    FileSpec f;
    f.path = volume_;
    f.mask = mask;
    c.files.push_back(f);
    return c;
  }
  std::vector<ComponentInfo> MyWriter() {
    return {Comp("", "Executables", false),         Comp("Executables", "ConfigFiles", false),
            Comp("", "LicenseInfo", true),          Comp("", "Security", true),
            Comp("Security", "UserInfo", false),    Comp("Security", "Certificates", false),
            Comp("", "writerData", true),           Comp("writerData", "Set1", false),
            Comp("writerData\\Set1", "Jan", false), Comp("writerData", "Usage", true),
            Comp("writerData\\Usage", "Jan", false)};
  }
  std::shared_ptr<LayoutWriter> L(const std::string& name, std::vector<ComponentInfo> layout) {
    auto w = std::make_shared<LayoutWriter>(name, ApplicationLevel::kFrontEnd, log_, volume_);
    w->layout = std::move(layout);
    writers_.push_back(w);
    return w;
  }
  // InitializeForBackup .. GatherWriterMetadata.
  void Begin(BackupComponents* bc, BackupType type = BackupType::kFull) {
    ASSERT_EQ(bc->InitializeForBackup(), S_OK_);
    ASSERT_EQ(bc->SetBackupState(true, false, type), S_OK_);
    std::shared_ptr<Async> a;
    ASSERT_EQ(bc->GatherWriterMetadata(&a), S_OK_);
    ASSERT_EQ(WaitForAsync(a), S_OK_);
  }
  const WriterMetadata* Md(BackupComponents* bc, const std::string& name) {
    for (size_t i = 0; i < bc->GetWriterMetadataCount(); ++i)
      if (bc->GetWriterMetadata(i)->name == name) return bc->GetWriterMetadata(i);
    ADD_FAILURE() << "no metadata for writer " << name;
    return nullptr;
  }
  HResult Add(BackupComponents* bc, const std::string& writer, const std::string& path,
              const std::string& name) {
    const WriterMetadata* md = Md(bc, writer);
    return md ? bc->AddComponent(md->instance_id, md->class_id, ComponentType::kFileGroup, path,
                                 name)
              : E_FAIL_;
  }
  HResult Prepared(BackupComponents* bc) {
    if (HResult hr = bc->StartSnapshotSet(&set_); hr != S_OK_) return hr;
    if (HResult hr = bc->AddToSnapshotSet(volume_, "", &snap_); hr != S_OK_) return hr;
    std::shared_ptr<Async> a;
    if (HResult hr = bc->PrepareForBackup(&a); hr != S_OK_) return hr;
    return WaitForAsync(a);
  }
  static std::vector<std::string> Explicit(const BackupComponentsDocument& d) {
    std::vector<std::string> out;
    for (const auto& c : d.components) out.push_back(c.FullPath());
    return out;
  }
  // "path\name <- included_with"
  static std::vector<std::string> Implicit(const BackupComponentsDocument& d) {
    std::vector<std::string> out;
    for (const auto& c : d.implicit_components)
      out.push_back(c.FullPath() + " <- " + c.included_with);
    return out;
  }
};

TEST_F(SelectionTest, RolesFollowSelectabilityAndLogicalPaths) {
  WriterMetadata md;
  md.components = MyWriter();
  auto role = [&](const std::string& path, const std::string& name) {
    return ComponentRoleName(RoleOf(md, FindComponent(md, path, name)));
  };
  EXPECT_EQ(role("", "Executables"), "required");
  // Below a non-selectable component, with no selectable ancestor: required too.
  EXPECT_EQ(role("Executables", "ConfigFiles"), "required");
  EXPECT_EQ(role("", "LicenseInfo"), "optional");
  EXPECT_EQ(role("", "Security"), "optional");
  EXPECT_EQ(role("Security", "UserInfo"), "subcomponent");
  EXPECT_EQ(role("writerData\\Set1", "Jan"), "subcomponent");
  EXPECT_EQ(role("writerData", "Usage"), "selectable subcomponent");
  EXPECT_EQ(role("writerData\\Usage", "Jan"), "subcomponent");
  // The set a component belongs to is its nearest selectable ancestor.
  EXPECT_EQ(md.components[SetOf(md, FindComponent(md, "writerData\\Usage", "Jan"))].FullPath(),
            "writerData\\Usage");
  EXPECT_EQ(SetOf(md, FindComponent(md, "Executables", "ConfigFiles")), kNoComponent);
  // writerData's set holds the nested ones; a non-selectable component defines none.
  EXPECT_EQ(SetMembersOf(md, FindComponent(md, "", "writerData")).size(), 4u);
  EXPECT_TRUE(SetMembersOf(md, FindComponent(md, "", "Executables")).empty());
  EXPECT_TRUE(SetMembersOf(md, FindComponent(md, "", "LicenseInfo")).empty());
  EXPECT_TRUE(IsBelow("writerData\\Usage", "writerData"));
  EXPECT_FALSE(IsBelow("writerDataX", "writerData"));
  EXPECT_FALSE(IsBelow("", "writerData"));
}

TEST_F(SelectionTest, ANonSelectableSubcomponentIsNeverAddedDirectly) {
  L("my", MyWriter());
  auto bc = Make();
  Begin(bc.get());
  EXPECT_EQ(Add(bc.get(), "my", "Security", "UserInfo"), E_INVALIDARG_);
  EXPECT_NE(bc->last_error().find("component set of 'Security'"), std::string::npos)
      << bc->last_error();
  EXPECT_EQ(Add(bc.get(), "my", "writerData\\Set1", "Jan"), E_INVALIDARG_);
  EXPECT_EQ(Add(bc.get(), "my", "writerData\\Usage", "Jan"), E_INVALIDARG_);
  EXPECT_NE(bc->last_error().find("'writerData\\Usage'"), std::string::npos) << bc->last_error();
  EXPECT_EQ(Add(bc.get(), "my", "Security", "Nothing"), VSS_E_OBJECT_NOT_FOUND);
  EXPECT_TRUE(bc->document().components.empty());
  EXPECT_TRUE(bc->document().implicit_components.empty());
}

TEST_F(SelectionTest, ASetRootBringsItsSubcomponentsIntoTheBcdImplicitly) {
  auto w = L("my", MyWriter());
  {
    auto bc = Make();
    Begin(bc.get());
    for (auto [path, name] : {std::pair{"", "Executables"}, std::pair{"Executables", "ConfigFiles"},
                              std::pair{"", "Security"}})
      ASSERT_EQ(Add(bc.get(), "my", path, name), S_OK_) << name << ": " << bc->last_error();
    EXPECT_EQ(Explicit(bc->document()),
              (std::vector<std::string>{"Executables", "Executables\\ConfigFiles", "Security"}));
    EXPECT_EQ(Implicit(bc->document()),
              (std::vector<std::string>{"Security\\UserInfo <- Security",
                                        "Security\\Certificates <- Security"}));
    ASSERT_EQ(Prepared(bc.get()), S_OK_) << bc->last_error();
    ASSERT_EQ(Snapshot(bc.get()), S_OK_) << bc->last_error();
    // Success is per set: the members have no record of their own.
    const WriterMetadata* md = Md(bc.get(), "my");
    EXPECT_EQ(bc->SetBackupSucceeded(md->instance_id, md->class_id, ComponentType::kFileGroup,
                                     "Security", "UserInfo", true),
              VSS_E_OBJECT_NOT_FOUND);
    for (auto& c : bc->document().components)
      ASSERT_EQ(
          bc->SetBackupSucceeded(c.instance_id, c.class_id, c.type, c.logical_path, c.name, true),
          S_OK_);
    std::shared_ptr<Async> a;
    ASSERT_EQ(bc->BackupComplete(&a), S_OK_);
    ASSERT_EQ(WaitForAsync(a), S_OK_);
    // The stored document keeps both lists.
    BackupComponentsDocument back;
    ASSERT_TRUE(BackupComponentsDocument::FromJson(bc->document().ToJson(), &back).ok());
    EXPECT_EQ(Implicit(back), Implicit(bc->document()));
    EXPECT_EQ(back.implicit_components.at(0).writer_name, "my");
    EXPECT_EQ(back.implicit_components.at(0).class_id, md->class_id);
  }
  // The writer is handed its explicit components only, as IVssWriterComponents is.
  EXPECT_EQ(w->seen_components,
            (std::vector<std::string>{"Executables", "Executables\\ConfigFiles", "Security"}));
  EXPECT_EQ(log_->Of("my"), (std::vector<std::string>{
                                "Identify", "PrepareForBackup", "PrepareForSnapshot", "Freeze",
                                "Thaw", "PostSnapshot", "BackupComplete", "BackupShutdown"}));
  // A document from before implicit components were listed still reads.
  BackupComponentsDocument old;
  nlohmann::json j = BackupComponentsDocument().ToJson();
  j.erase("implicit_components");
  ASSERT_TRUE(BackupComponentsDocument::FromJson(j, &old).ok());
  EXPECT_TRUE(old.implicit_components.empty());
}

TEST_F(SelectionTest, ASelectableSubcomponentComesWithItsSetOrOnItsOwnButNotBoth) {
  L("my", MyWriter());
  {
    // On its own: its own set (Jan) comes with it, not its ancestor's.
    auto bc = Make();
    Begin(bc.get());
    ASSERT_EQ(Add(bc.get(), "my", "writerData", "Usage"), S_OK_) << bc->last_error();
    EXPECT_EQ(Implicit(bc->document()),
              (std::vector<std::string>{"writerData\\Usage\\Jan <- writerData\\Usage"}));
    // Its ancestor's set would hold it a second time.
    EXPECT_EQ(Add(bc.get(), "my", "", "writerData"), VSS_E_OBJECT_ALREADY_EXISTS);
    EXPECT_NE(bc->last_error().find("'writerData\\Usage', which was added on its own"),
              std::string::npos)
        << bc->last_error();
  }
  {
    // With its set: nested sets come in whole, and it cannot be added again.
    auto bc = Make();
    Begin(bc.get());
    ASSERT_EQ(Add(bc.get(), "my", "", "writerData"), S_OK_) << bc->last_error();
    EXPECT_EQ(Implicit(bc->document()),
              (std::vector<std::string>{
                  "writerData\\Set1 <- writerData", "writerData\\Set1\\Jan <- writerData",
                  "writerData\\Usage <- writerData", "writerData\\Usage\\Jan <- writerData"}));
    EXPECT_EQ(Add(bc.get(), "my", "writerData", "Usage"), VSS_E_OBJECT_ALREADY_EXISTS);
    EXPECT_NE(bc->last_error().find("already included with the component set of 'writerData'"),
              std::string::npos)
        << bc->last_error();
    EXPECT_EQ(Explicit(bc->document()), (std::vector<std::string>{"writerData"}));
  }
}

TEST_F(SelectionTest, ARequiredComponentLeftOutFailsPrepareForBackup) {
  L("my", MyWriter());
  L("bystander", MyWriter());  // none of its components is added: it does not take part
  auto bc = Make();
  Begin(bc.get());
  ASSERT_EQ(Add(bc.get(), "my", "", "Security"), S_OK_);
  ASSERT_EQ(Add(bc.get(), "my", "", "Executables"), S_OK_);
  EXPECT_EQ(Prepared(bc.get()), VSS_E_BAD_STATE);
  EXPECT_NE(bc->last_error().find("required component 'Executables\\ConfigFiles'"),
            std::string::npos)
      << bc->last_error();
  EXPECT_EQ(log_->Of("my"), (std::vector<std::string>{"Identify"}));  // nothing delivered
  // The requester may still add it and go on.
  ASSERT_EQ(Add(bc.get(), "my", "Executables", "ConfigFiles"), S_OK_);
  std::shared_ptr<Async> a;
  ASSERT_EQ(bc->PrepareForBackup(&a), S_OK_) << bc->last_error();
  ASSERT_EQ(WaitForAsync(a), S_OK_);
  ASSERT_EQ(Snapshot(bc.get()), S_OK_) << bc->last_error();
  // The writer with nothing added heard PrepareForBackup (with no
  // components) and was never frozen.
  EXPECT_EQ(log_->Of("bystander"), (std::vector<std::string>{"Identify", "PrepareForBackup"}));
}

// §5.4 with component sets: the snapshot bits of implicitly included
// members count, and those of components not included do not.
TEST_F(SelectionTest, ASubcomponentNeedingASnapshotMakesItsSetNeedOne) {
  L("app", {Comp("", "data", true, fsbt::kAllBackupRequired),  // the root needs none
            Comp("data", "log", false)});                      // its member does (0xF0F)
  auto bc = Make();
  Begin(bc.get());
  ASSERT_EQ(Add(bc.get(), "app", "", "data"), S_OK_);
  ASSERT_EQ(Prepared(bc.get()), S_OK_);
  EXPECT_TRUE(bc->IsSnapshotRequired());
  std::shared_ptr<Async> a;
  EXPECT_EQ(bc->BackupComplete(&a), VSS_E_BAD_STATE);  // DoSnapshotSet cannot be skipped
}

TEST_F(SelectionTest, NoSnapshotIsNeededWhenNoIncludedFileSetAsksForOne) {
  for (BackupType type : {BackupType::kFull, BackupType::kIncremental}) {
    SCOPED_TRACE(BackupTypeName(type));
    // Both the root and its member ask for backups, not snapshots.
    writers_.clear();
    L("app", {Comp("", "data", true, fsbt::kAllBackupRequired),
              Comp("data", "log", false, fsbt::kAllBackupRequired)});
    auto bc = Make();
    Begin(bc.get(), type);
    ASSERT_EQ(Add(bc.get(), "app", "", "data"), S_OK_);
    ASSERT_EQ(Prepared(bc.get()), S_OK_);
    EXPECT_FALSE(bc->IsSnapshotRequired());
  }
}

TEST_F(SelectionTest, ARootNeedingASnapshotDoesNotCountWhenOnlyItsSubcomponentIsIncluded) {
  L("app", {Comp("", "data", true),  // needs a snapshot (0xF0F), but is left out
            Comp("data", "index", true, fsbt::kAllBackupRequired)});
  {
    auto bc = Make();
    Begin(bc.get());
    ASSERT_EQ(Add(bc.get(), "app", "data", "index"), S_OK_);
    ASSERT_EQ(Prepared(bc.get()), S_OK_);
    EXPECT_FALSE(bc->IsSnapshotRequired());
    // So DoSnapshotSet may be skipped: BackupComplete straight away.
    const auto& c = bc->document().components.at(0);
    EXPECT_EQ(
        bc->SetBackupSucceeded(c.instance_id, c.class_id, c.type, c.logical_path, c.name, true),
        S_OK_);
    std::shared_ptr<Async> a;
    ASSERT_EQ(bc->BackupComplete(&a), S_OK_);
    ASSERT_EQ(WaitForAsync(a), S_OK_);
  }
  EXPECT_EQ(log_->Of("app"), (std::vector<std::string>{"Identify", "PrepareForBackup",
                                                       "BackupComplete", "BackupShutdown"}));
  // With the root, its own file set counts.
  auto bc = Make();
  Begin(bc.get());
  ASSERT_EQ(Add(bc.get(), "app", "", "data"), S_OK_);
  ASSERT_EQ(Prepared(bc.get()), S_OK_);
  EXPECT_TRUE(bc->IsSnapshotRequired());
}

// An image backup always needs a snapshot: the volume writer's component
// for each volume is required, and its file set asks for one for every
// backup type (docs/vss.md, "The file-set mask rule").
TEST_F(SelectionTest, TheVolumeWritersComponentAlwaysNeedsASnapshot) {
  for (BackupType type : {BackupType::kFull, BackupType::kIncremental, BackupType::kDifferential,
                          BackupType::kCopy}) {
    SCOPED_TRACE(BackupTypeName(type));
    auto w = std::make_shared<VolumeWriter>(std::vector<std::string>{volume_}, dir_ / "state",
                                            std::map<std::string, ChangeTracker>{});
    BackupComponents bc({w}, {std::make_shared<OfflineProvider>()}, opt_);
    Begin(&bc, type);
    const WriterMetadata* md = bc.GetWriterMetadata(0);
    ASSERT_NE(md, nullptr);
    ASSERT_EQ(md->components.size(), 1u);
    EXPECT_EQ(RoleOf(*md, 0), ComponentRole::kRequired);
    ASSERT_EQ(bc.AddComponent(md->instance_id, md->class_id, ComponentType::kFileGroup,
                              VolumeWriter::kLogicalPath, volume_),
              S_OK_);
    ASSERT_EQ(Prepared(&bc), S_OK_);
    EXPECT_TRUE(bc.IsSnapshotRequired());
  }
}

TEST(VssNames, StatesAndCodesHaveTheirVssNames) {
  EXPECT_EQ(WriterStateName(WriterState::kFailedAtFreeze), "VSS_WS_FAILED_AT_FREEZE");
  EXPECT_EQ(static_cast<int>(WriterState::kFailedAtBackupShutdown), 15);
  EXPECT_EQ(WriterStateText(WriterState::kStable), "[1] Stable");
  EXPECT_EQ(HResultName(0x80042301), "VSS_E_BAD_STATE");
  EXPECT_EQ(HResultName(0x800423F2), "VSS_E_WRITERERROR_TIMEOUT");
  EXPECT_EQ(HResultName(0x12345678), "0x12345678");
  EXPECT_EQ(fsbt::SnapshotBitFor(BackupType::kCopy), 0x100u);
  EXPECT_EQ(fsbt::SnapshotBitFor(BackupType::kLog), 0x800u);
  Guid g = Guid::Random(), h;
  ASSERT_TRUE(Guid::Parse(g.ToString(), &h));
  EXPECT_EQ(g, h);
}

}  // namespace
}  // namespace gnomon::vss

namespace gnomon::vss {
namespace {

// The volume writer's verdict on a previous stamp, as it records it in the
// component's backup metadata.
nlohmann::json VerdictFor(const std::string& volume, const std::string& stamp,
                          const std::string& state_dir, const std::string& runtime_dir) {
  RequesterOptions ro;
  ro.runtime_dir = runtime_dir;
  auto w = std::make_shared<VolumeWriter>(std::vector<std::string>{volume}, state_dir,
                                          std::map<std::string, ChangeTracker>{});
  BackupComponents bc({w}, {std::make_shared<OfflineProvider>()}, ro);
  std::shared_ptr<Async> a;
  bc.InitializeForBackup();
  bc.SetBackupState(true, false, BackupType::kIncremental);
  bc.GatherWriterMetadata(&a);
  WaitForAsync(a);
  const WriterMetadata* md = bc.GetWriterMetadata(0);
  bc.AddComponent(md->instance_id, md->class_id, ComponentType::kFileGroup, "volumes", volume);
  Guid set, snap;
  bc.StartSnapshotSet(&set);
  bc.AddToSnapshotSet(volume, "", &snap);
  bc.SetPreviousBackupStamp(VolumeWriter::ClassId(), ComponentType::kFileGroup, "volumes", volume,
                            stamp);
  bc.PrepareForBackup(&a);
  WaitForAsync(a);
  return nlohmann::json::parse(bc.document().components.at(0).backup_metadata);
}

TEST(VolumeStampTest, BadStampsAreRejectedWithAReasonAndAFullRead) {
  test::TempDir dir;
  std::string vol = dir / "vol.img";
  test::WriteFile(vol, test::RandomBytes(1 << 16, 3));
  VolumeIdentity id;
  ASSERT_TRUE(IdentifyVolume(vol, &id).ok());
  VolumeStamp good;
  good.volume_key = VolumeKey(id);
  good.size = id.size;
  good.tracker = ChangeTracker::kReflinkFiemap;
  good.base_snapshot = Guid::Random().ToString();
  std::string encoded = good.Encode();
  VolumeStamp other = good;
  other.volume_key = "file:/somewhere/else.img";
  VolumeStamp resized = good;
  resized.size += 4096;
  // A version 1 stamp is still read: it gets as far as the good one.
  std::string v1 = encoded;
  v1.replace(v1.find("gnomon.volume-stamp/2"), 21, "gnomon.volume-stamp/1");
  std::string unknown = encoded;
  unknown.replace(unknown.find("reflink-fiemap"), 14, "quantum-ledger");
  struct Case {
    std::string stamp, reason;
  } cases[] = {
      {"", "no previous backup"},
      {"\x01\x02garbage", "not valid JSON"},
      {encoded.substr(0, encoded.size() / 2), "not valid JSON"},
      {R"({"stamp":"gnomon.volume-stamp/9","volume_key":"x"})", "version 9, newer"},
      {R"({"stamp":"gnomon.volume-stamp/1"})", "incomplete"},
      {R"({"hello":"world"})", "not a gnomon volume stamp"},
      {other.Encode(), "from another volume"},
      {resized.Encode(), "size changed"},
      {unknown, "change tracker this gnomon does not know (quantum-ledger)"},
      // A good stamp, but this backup's provider cannot track changes.
      {encoded, "cannot track changes"},
      {v1, "cannot track changes"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.stamp);
    auto v = VerdictFor(vol, c.stamp, dir / "state", dir / "run");
    EXPECT_EQ(v["change_tracking"], "full-read");
    EXPECT_NE(v["reason"].get<std::string>().find(c.reason), std::string::npos) << v.dump();
  }
}

}  // namespace
}  // namespace gnomon::vss

namespace gnomon::vss {
namespace {

namespace fs = std::filesystem;

// A registry directory holding what is not a record: List() returns at once
// with only the good record, neither blocking on a FIFO nor reading
// /dev/zero until memory runs out; a record filed under another id's name
// cannot stand in for that snapshot.
TEST(SnapshotRegistryTest, ListSkipsAnythingButSmallRegularRecordsUnderTheirOwnId) {
  TempDir dir;
  SnapshotRegistry reg(dir / "snapshots");
  SnapshotProperties good;
  good.snapshot_id = Guid::Random();
  good.snapshot_set_id = Guid::Random();
  good.volume = dir / "vol.img";
  good.provider = "reflink";
  good.device = dir / (".gnomon-snap-" + good.snapshot_id.ToString() + "-vol.img");
  good.state = SnapshotState::kBase;
  ASSERT_TRUE(reg.Put(good).ok());
  const std::string rdir = reg.dir();
  const auto good_file = test::ReadFile(rdir + "/" + good.snapshot_id.ToString() + ".json");
  ASSERT_FALSE(good_file.empty());

  ASSERT_EQ(::mkfifo((rdir + "/x.json").c_str(), 0600), 0) << std::strerror(errno);
  ASSERT_EQ(::symlink("/dev/zero", (rdir + "/z.json").c_str()), 0) << std::strerror(errno);
  // A valid record, padded past 1 MiB, under its own id's name.
  SnapshotProperties big = good;
  big.snapshot_id = Guid::Random();
  ASSERT_TRUE(reg.Put(big).ok());
  const std::string big_path = rdir + "/" + big.snapshot_id.ToString() + ".json";
  auto padded = test::ReadFile(big_path);
  padded.insert(padded.end(), (1u << 20) + 1, ' ');
  test::WriteFile(big_path, padded);
  // The good record's text under another id's name, pointing elsewhere.
  std::string impostor(good_file.begin(), good_file.end());
  const std::string real_device = good.device;
  impostor.replace(impostor.find(real_device), real_device.size(), dir / "precious");
  test::WriteFile(rdir + "/" + Guid::Random().ToString() + ".json",
                  std::vector<uint8_t>(impostor.begin(), impostor.end()));

  // On a thread of its own: if List() blocks, the test fails at the deadline
  // instead of hanging (a std::async future would wait for it on destruction).
  auto list = std::make_shared<std::packaged_task<std::vector<SnapshotProperties>()>>(
      [reg] { return reg.List(); });
  auto result = list->get_future();
  std::thread([list] { (*list)(); }).detach();
  ASSERT_EQ(result.wait_for(std::chrono::seconds(10)), std::future_status::ready)
      << "SnapshotRegistry::List() blocked";
  const auto all = result.get();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].snapshot_id, good.snapshot_id);
  EXPECT_EQ(all[0].device, good.device);
  SnapshotProperties got;
  ASSERT_TRUE(reg.Get(good.snapshot_id, &got));
  EXPECT_EQ(got.device, good.device);
}

// DeleteLeftover removes only what a registry record may name: its own
// snapshot's clone, beside the file the record says it is a snapshot of.
TEST(ReflinkLeftoverTest, DeleteLeftoverRemovesOnlyTheRecordsOwnCloneBesideItsFile) {
  TempDir dir, elsewhere;
  const std::string live = dir / "vol.img";
  test::WriteFile(live, {1, 2, 3});
  ReflinkProvider provider(dir / "state");
  SnapshotRegistry reg(dir / "state/snapshots");
  const Guid id = Guid::Random(), other = Guid::Random();
  auto record = [&](const std::string& device) {
    SnapshotProperties p;
    p.snapshot_id = id;
    p.provider = "reflink";
    p.device = device;
    p.state = SnapshotState::kBase;
    p.volume_key = "file:" + live;
    return p;
  };
  const std::string clone_name = ".gnomon-snap-" + id.ToString() + "-vol.img";
  const std::string far = elsewhere / clone_name;  // the right name, another directory
  const std::string other_ids = dir / (".gnomon-snap-" + other.ToString() + "-vol.img");
  const std::string loose = dir / ".gnomon-snap-precious";  // the prefix alone
  const std::string clone = dir / clone_name;
  for (const auto& f : {far, other_ids, loose, clone}) test::WriteFile(f, {7});

  EXPECT_EQ(provider.DeleteLeftover(record(far)), E_INVALIDARG_);
  EXPECT_EQ(provider.DeleteLeftover(record(other_ids)), E_INVALIDARG_);
  EXPECT_EQ(provider.DeleteLeftover(record(loose)), E_INVALIDARG_);
  SnapshotProperties loop = record(far);  // a loop device starting inside the file
  loop.volume_key = "file:" + live + "@1048576";
  EXPECT_EQ(provider.DeleteLeftover(loop), E_INVALIDARG_);
  // A snapshot that advanced a base is the base's file (another id in its
  // name), but still only beside the live file.
  const std::string far_base = elsewhere / (".gnomon-snap-" + other.ToString() + "-vol.img");
  test::WriteFile(far_base, {7});
  SnapshotProperties advanced = record(far_base);
  advanced.advances = other.ToString();
  EXPECT_EQ(provider.DeleteLeftover(advanced), E_INVALIDARG_);
  for (const auto& f : {far, other_ids, loose, far_base}) EXPECT_TRUE(fs::exists(f)) << f;

  EXPECT_EQ(provider.DeleteLeftover(record(clone)), S_OK_) << provider.last_error();
  EXPECT_FALSE(fs::exists(clone));
  EXPECT_TRUE(fs::exists(live));
}

// A snapshot that died advancing a base: its device (the base's file) and
// undo file go, and the base's record with them, but only a base record
// naming that same file.
TEST(ReflinkLeftoverTest, AnAdvancingLeftoverRemovesOnlyTheBaseRecordOfItsOwnFile) {
  TempDir dir;
  ReflinkProvider provider(dir / "state");
  SnapshotRegistry reg(dir / "state/snapshots");
  auto put = [&](SnapshotProperties p) {
    p.provider = "reflink";
    EXPECT_TRUE(reg.Put(p).ok());
    return p;
  };
  SnapshotProperties base;
  base.snapshot_id = Guid::Random();
  base.device = dir / (".gnomon-snap-" + base.snapshot_id.ToString() + "-vol.img");
  base.state = SnapshotState::kAdvancing;
  base = put(base);
  SnapshotProperties unrelated;  // a base of another file, which no other record may remove
  unrelated.snapshot_id = Guid::Random();
  unrelated.device = dir / (".gnomon-snap-" + unrelated.snapshot_id.ToString() + "-other.img");
  unrelated.state = SnapshotState::kBase;
  unrelated = put(unrelated);

  SnapshotProperties dead;  // the advance that died: its device is the base's file
  dead.snapshot_id = Guid::Random();
  dead.device = base.device;
  dead.advances = base.snapshot_id.ToString();
  dead.state = SnapshotState::kPreparing;
  dead = put(dead);
  const std::string undo = dir / (".gnomon-undo-" + dead.snapshot_id.ToString());
  test::WriteFile(base.device, {1});
  test::WriteFile(undo, {2});
  SnapshotProperties hostile = dead;  // names the unrelated base as the one it advanced
  hostile.snapshot_id = Guid::Random();
  hostile.device = dir / (".gnomon-snap-" + hostile.snapshot_id.ToString() + "-vol.img");
  hostile.advances = unrelated.snapshot_id.ToString();
  hostile = put(hostile);

  EXPECT_EQ(provider.DeleteLeftover(hostile), S_OK_) << provider.last_error();
  SnapshotProperties got;
  EXPECT_TRUE(reg.Get(unrelated.snapshot_id, &got)) << "another base's record was removed";
  EXPECT_FALSE(reg.Get(hostile.snapshot_id, &got));

  EXPECT_EQ(provider.DeleteLeftover(dead), S_OK_) << provider.last_error();
  EXPECT_FALSE(fs::exists(base.device));
  EXPECT_FALSE(fs::exists(undo));
  EXPECT_FALSE(reg.Get(base.snapshot_id, &got));
  EXPECT_FALSE(reg.Get(dead.snapshot_id, &got));
  EXPECT_TRUE(reg.Get(unrelated.snapshot_id, &got));
}

}  // namespace
}  // namespace gnomon::vss
