// Which components a backup adds (engine/component_selection.h): the
// choice itself, then through the real gnomon binary with real writer
// programs (tests/test_writer_app.cc --layout set): the default (required
// components and component-set roots, set members implicit in the BCD),
// `backup --component`, bad selectors as usage errors, and
// `writers --components`. No root needed: the offline provider snapshots a
// regular file.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "engine/component_selection.h"
#include "tests/test_util.h"
#include "vss/volume_writer.h"

namespace gnomon {
namespace {

using nlohmann::json;
using test::Gnomon;
using test::TempDir;
namespace fs = std::filesystem;

// --- The choice ---------------------------------------------------------

vss::ComponentInfo Comp(const std::string& path, const std::string& name, bool selectable,
                        const std::string& file) {
  vss::ComponentInfo c;
  c.logical_path = path;
  c.name = name;
  c.selectable = selectable;
  vss::FileSpec f;
  f.path = file;
  c.files.push_back(f);
  return c;
}

// The layout of test_writer_app --layout set, files on "on" or "off" the volumes.
vss::WriterMetadata SetWriter(const std::string& name) {
  vss::WriterMetadata md;
  md.name = name;
  md.class_id = vss::Guid::Random();
  md.instance_id = vss::Guid::Random();
  md.components = {Comp("app", "db", false, "on"), Comp("", "data", true, "on"),
                   Comp("data", "log", false, "on"), Comp("data", "index", true, "on"),
                   Comp("", "extra", true, "off")};
  return md;
}

bool OnVolumes(const vss::FileSpec& f) { return f.path == "on"; }

// writer name -> the full paths chosen for it.
std::map<std::string, std::vector<std::string>> Choose(
    const std::vector<const vss::WriterMetadata*>& writers, const std::vector<std::string>& sel,
    Status* status = nullptr, std::vector<std::string>* notes = nullptr) {
  std::vector<ComponentChoice> out;
  std::vector<std::string> n;
  Status s = ChooseComponents(writers, OnVolumes, sel, &out, notes ? notes : &n);
  if (status) *status = s;
  std::map<std::string, std::vector<std::string>> m;
  for (const auto& c : out)
    for (size_t k : c.components) m[c.writer->name].push_back(c.writer->components[k].FullPath());
  return m;
}

TEST(ChooseComponentsTest, DefaultAddsRequiredComponentsAndSetRootsOnTheVolumes) {
  vss::WriterMetadata a = SetWriter("a"), elsewhere = SetWriter("elsewhere");
  for (auto& c : elsewhere.components) c.files[0].path = "off";
  auto m = Choose({&a, &elsewhere}, {});
  // Set members come in with data; extra has nothing on the volumes; a
  // writer with nothing on the volumes does not take part.
  EXPECT_EQ(m["a"], (std::vector<std::string>{"app\\db", "data"}));
  EXPECT_EQ(m.count("elsewhere"), 0u);
}

TEST(ChooseComponentsTest, SelectorsNarrowTheWritersAndAddTheRequiredOnes) {
  vss::WriterMetadata a = SetWriter("a"), b = SetWriter("b");
  vss::WriterMetadata vol;  // a built-in writer always takes part
  vol.name = "Volume Image Writer";
  vol.class_id = vss::VolumeWriter::ClassId();
  vol.components = {Comp("volumes", "/dev/x", false, "on")};
  auto m = Choose({&a, &b, &vol}, {"a\\extra"});
  EXPECT_EQ(m["a"], (std::vector<std::string>{"app\\db", "extra"}));
  EXPECT_EQ(m.count("b"), 0u);
  EXPECT_EQ(m["Volume Image Writer"], (std::vector<std::string>{"volumes\\/dev/x"}));
  // A selectable subcomponent on its own, or with its root (then the root's
  // set brings it); the class id in capitals and braces names the writer.
  EXPECT_EQ(Choose({&a}, {"a\\data\\index"})["a"],
            (std::vector<std::string>{"app\\db", "data\\index"}));
  std::string upper = "{" + a.class_id.ToString() + "}";
  for (auto& ch : upper) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  EXPECT_EQ(Choose({&a}, {"a\\data\\index", upper + "\\data"})["a"],
            (std::vector<std::string>{"app\\db", "data"}));
  EXPECT_EQ(Choose({&a, &b}, {b.class_id.ToString()})["b"],
            (std::vector<std::string>{"app\\db", "data"}));
  // A writer named with nothing on the volumes takes part, with a note.
  vss::WriterMetadata off = SetWriter("off");
  for (auto& c : off.components) c.files[0].path = "off";
  std::vector<std::string> notes;
  Status s;
  EXPECT_EQ(Choose({&off}, {"off"}, &s, &notes)["off"], (std::vector<std::string>{"app\\db"}));
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_NE(notes[0].find("'off' has no file on the volumes"), std::string::npos) << notes[0];
}

TEST(ChooseComponentsTest, BadSelectorsNameWhatExists) {
  vss::WriterMetadata a = SetWriter("a");
  Status s;
  Choose({&a}, {"nosuch"}, &s);
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(s.message().find("the writers are: 'a' {" + a.class_id.ToString() + "}"),
            std::string::npos)
      << s.message();
  Choose({&a}, {"a\\nope"}, &s);
  EXPECT_NE(s.message().find("has no component 'nope'; its components are: app\\db (required), "
                             "data (optional), data\\log (subcomponent of data), data\\index "
                             "(selectable subcomponent of data), extra (optional)"),
            std::string::npos)
      << s.message();
  Choose({&a}, {"a\\data\\log"}, &s);
  EXPECT_NE(s.message().find("'data\\log' of writer 'a' is not selectable: it comes in only with "
                             "the component set of 'data' (select 'a\\data')"),
            std::string::npos)
      << s.message();
}

TEST(ChooseComponentsTest, DescribeComponentsGivesRolesSetsAndFiles) {
  vss::WriterMetadata a = SetWriter("a");
  a.components[2].selectable_for_restore = true;
  json d = DescribeComponents(a);
  ASSERT_EQ(d.size(), 5u);
  EXPECT_EQ(d[0]["path"], "app\\db");
  EXPECT_EQ(d[0]["role"], "required");
  EXPECT_TRUE(d[0]["required"].get<bool>());
  EXPECT_EQ(d[0]["selectability"], "not selectable");
  EXPECT_TRUE(d[0]["component_set"].is_null());
  EXPECT_EQ(d[1]["set_members"], (json{"data\\log", "data\\index"}));
  EXPECT_EQ(d[1]["selectability"], "selectable");
  EXPECT_EQ(d[2]["selectability"], "selectable for restore");
  EXPECT_EQ(d[2]["role"], "subcomponent");
  EXPECT_EQ(d[2]["component_set"], "data");
  EXPECT_EQ(d[3]["role"], "selectable subcomponent");
  EXPECT_EQ(d[4]["files"][0]["path"], "off");
  EXPECT_EQ(d[4]["files"][0]["mask_hex"], "0xf0f");
}

// --- Through the binary ---------------------------------------------------

std::vector<std::string> Lines(const std::string& path) {
  std::vector<std::string> v;
  std::ifstream f(path);
  for (std::string line; std::getline(f, line);) v.push_back(line);
  return v;
}

// test_writer_app in the writer directory, stopped when the object dies.
class App : public test::BackgroundProcess {
 public:
  App(const std::string& dir, const std::string& name, const std::string& log,
      std::vector<std::string> extra)
      : test::BackgroundProcess(Args(dir, name, log, std::move(extra)), dir + "/" + name + ".sock") {}

 private:
  static std::vector<std::string> Args(const std::string& dir, const std::string& name,
                                       const std::string& log, std::vector<std::string> extra) {
    std::vector<std::string> args = {TEST_WRITER_APP_BIN, dir, name, log};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }
};

class SelectionCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    repo_ = dir_ / "repo";
    ASSERT_EQ(Gnomon({"init", "--repo", repo_, "--chunk-size", "64"}).exit_code, 0);
    volume_ = dir_ / "vol";
    test::WriteFile(volume_, test::TextLikeBytes(1u << 20, 5));
    set_ = std::make_unique<App>(
        state_.writer_dir(), "setapp", dir_ / "set.log",
        std::vector<std::string>{"--volume", volume_, "--layout", "set", "--components-log",
                                 dir_ / "set.components"});
    other_ = std::make_unique<App>(state_.writer_dir(), "other", dir_ / "other.log",
                                   std::vector<std::string>{"--volume", volume_, "--components-log",
                                                            dir_ / "other.components"});
  }
  test::CommandResult Backup(std::vector<std::string> extra) {
    std::vector<std::string> args = {"--repo", repo_, "backup", "--json"};
    args.insert(args.end(), extra.begin(), extra.end());
    args.push_back(volume_);
    return Gnomon(args);
  }
  json Bcd() {
    auto show = Gnomon({"--repo", repo_, "show", "--json", "latest"});
    EXPECT_EQ(show.exit_code, 0) << show.err;
    return json::parse(show.out)["vss"]["bcd"];
  }
  // writer -> "path\name" of its explicit (or implicit: "path\name <- root") components.
  static std::map<std::string, std::vector<std::string>> Components(const json& bcd,
                                                                    bool implicit) {
    std::map<std::string, std::vector<std::string>> m;
    for (const auto& c : bcd[implicit ? "implicit_components" : "components"]) {
      std::string lp = c["logical_path"], name = c["name"];
      std::string p = lp.empty() ? name : lp + "\\" + name;
      if (implicit) p += " <- " + c["included_with"].get<std::string>();
      m[c["writer_name"]].push_back(p);
    }
    return m;
  }

  test::IsolatedState state_;
  TempDir dir_;
  std::string repo_, volume_;
  std::unique_ptr<App> set_, other_;
};

const std::vector<std::string> kWholeBackup = {
    "Identify", "PrepareForBackup", "PrepareForSnapshot", "Freeze",
    "Thaw",     "PostSnapshot",     "BackupComplete",     "BackupShutdown"};

TEST_F(SelectionCliTest, ByDefaultRequiredComponentsAndSetRootsAreAddedAndMembersImplicit) {
  auto r = Backup({});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json bcd = Bcd();
  auto explicit_ = Components(bcd, false), implicit = Components(bcd, true);
  // extra's file is not on the volume: left out.
  EXPECT_EQ(explicit_["setapp"], (std::vector<std::string>{"app\\db", "data"}));
  EXPECT_EQ(implicit["setapp"],
            (std::vector<std::string>{"data\\log <- data", "data\\index <- data"}));
  EXPECT_EQ(explicit_["other"], (std::vector<std::string>{"app\\db"}));
  EXPECT_EQ(explicit_["Volume Image Writer"], (std::vector<std::string>{"volumes\\" + volume_}));
  auto show = Gnomon({"--repo", repo_, "show", "latest"});
  EXPECT_NE(show.out.find("[setapp] data\\log (implicit, in the component set of data)\n"),
            std::string::npos)
      << show.out;
  // The writer is handed its explicit components; both writers took part.
  EXPECT_EQ(Lines(dir_ / "set.components"), (std::vector<std::string>{"app\\db,data"}));
  EXPECT_EQ(Lines(dir_ / "set.log"), kWholeBackup);
  EXPECT_EQ(Lines(dir_ / "other.log"), kWholeBackup);
}

TEST_F(SelectionCliTest, ComponentPicksOnlyThatWriterTheOtherIsNeitherGivenComponentsNorFrozen) {
  auto r = Backup({"--component", "setapp\\extra"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json bcd = Bcd();
  auto explicit_ = Components(bcd, false);
  // The component named, with its writer's required one; the built-in
  // volume writer always takes part.
  EXPECT_EQ(explicit_["setapp"], (std::vector<std::string>{"app\\db", "extra"}));
  EXPECT_EQ(explicit_.count("other"), 0u) << bcd.dump();
  EXPECT_EQ(explicit_["Volume Image Writer"].size(), 1u);
  EXPECT_TRUE(bcd["implicit_components"].empty()) << bcd.dump();
  EXPECT_EQ(Lines(dir_ / "set.log"), kWholeBackup);
  // PrepareForBackup reaches every writer (docs/vss.md); the one not
  // selected is given no components there and hears nothing more until
  // BackupShutdown: it is never frozen.
  EXPECT_EQ(Lines(dir_ / "other.log"),
            (std::vector<std::string>{"Identify", "PrepareForBackup", "BackupShutdown"}));
  EXPECT_EQ(Lines(dir_ / "other.components"), (std::vector<std::string>{""}));
}

TEST_F(SelectionCliTest, AWriterIsNamedByItsClassIdAsWritersPrintsIt) {
  auto w = Gnomon({"writers", "--json"});
  ASSERT_EQ(w.exit_code, 0) << w.err;
  std::string id;
  for (const auto& x : json::parse(w.out))
    if (x["name"] == "other") id = x["class_id"];
  ASSERT_FALSE(id.empty()) << w.out;
  const size_t before = Lines(dir_ / "other.log").size();  // what `writers` delivered
  auto r = Backup({"--component", "{" + id + "}"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto explicit_ = Components(Bcd(), false);
  EXPECT_EQ(explicit_["other"], (std::vector<std::string>{"app\\db"}));
  EXPECT_EQ(explicit_.count("setapp"), 0u);
  auto log = Lines(dir_ / "other.log");
  EXPECT_EQ(std::vector<std::string>(log.begin() + static_cast<long>(before), log.end()),
            kWholeBackup);
}

TEST_F(SelectionCliTest, ABadComponentIsAUsageErrorNamingWhatExists) {
  struct Case {
    std::string selector;
    std::vector<std::string> said;
  };
  const std::vector<Case> cases = {
      {"nosuch",
       {"no writer has that name or class id", "'setapp' {", "'other' {",
        "'Volume Image Writer' {"}},
      {"setapp\\nope",
       {"writer 'setapp' has no component 'nope'", "app\\db (required)",
        "data\\log (subcomponent of data)", "extra (optional)"}},
      {"setapp\\data\\log",
       {"'data\\log' of writer 'setapp' is not selectable", "only with the component set of 'data'",
        "select 'setapp\\data'"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.selector);
    auto r = Backup({"--component", c.selector});
    EXPECT_EQ(r.exit_code, 2) << r.err;
    for (const auto& s : c.said) EXPECT_NE(r.err.find(s), std::string::npos) << s << "\n" << r.err;
    EXPECT_EQ(json::parse(r.out)["exit_code"], 2) << r.out;
  }
  // Nothing was prepared, frozen or stored.
  for (const auto& log : {"set.log", "other.log"})
    for (const auto& line : Lines(dir_ / log)) {
      EXPECT_NE(line, "PrepareForBackup") << log;
      EXPECT_NE(line, "Freeze") << log;
    }
  EXPECT_EQ(json::parse(Gnomon({"--repo", repo_, "list", "--json"}).out).size(), 0u);
}

TEST_F(SelectionCliTest, WritersComponentsListsSelectabilityRolesSetsAndFileSpecs) {
  auto r = Gnomon({"writers", "--components", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::map<std::string, json> comps;
  for (const auto& w : json::parse(r.out))
    if (w["name"] == "setapp")
      for (const auto& c : w["components"]) comps[c["path"]] = c;
  ASSERT_EQ(comps.size(), 5u) << r.out;
  EXPECT_EQ(comps["app\\db"]["role"], "required");
  EXPECT_TRUE(comps["app\\db"]["required"].get<bool>());
  EXPECT_EQ(comps["app\\db"]["selectability"], "not selectable");
  EXPECT_EQ(comps["data"]["selectability"], "selectable");
  EXPECT_EQ(comps["data"]["role"], "optional");
  EXPECT_EQ(comps["data"]["set_members"], (json{"data\\log", "data\\index"}));
  EXPECT_EQ(comps["data\\log"]["selectability"], "selectable for restore");
  EXPECT_EQ(comps["data\\log"]["role"], "subcomponent");
  EXPECT_EQ(comps["data\\log"]["component_set"], "data");
  EXPECT_EQ(comps["data\\index"]["role"], "selectable subcomponent");
  EXPECT_EQ(comps["data\\index"]["files"][0]["path"], volume_);
  EXPECT_EQ(comps["data\\index"]["files"][0]["mask"], 0xF0F);
  EXPECT_EQ(comps["extra"]["files"][0]["path"], "/nonexistent/gnomon-test-extra");

  auto text = Gnomon({"writers", "--components"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  for (const std::string& s : std::vector<std::string>{
           "   Components:\n", "'app\\db': file group, not selectable, required (taken whenever",
           "'data': file group, selectable, optional\n",
           "         defines a component set: data\\log, data\\index\n",
           "'data\\log': file group, selectable for restore, subcomponent, in the component set "
           "of 'data' (comes in only with it)",
           "'data\\index': file group, selectable, selectable subcomponent, in the component set "
           "of 'data' (comes in with it, or on its own)",
           "         file: " + volume_ + ", spec '*', mask 0xf0f\n"})
    EXPECT_NE(text.out.find(s), std::string::npos) << s << "\n" << text.out;
  // Without --components, neither lists them.
  EXPECT_EQ(Gnomon({"writers"}).out.find("Components:"), std::string::npos);
  EXPECT_FALSE(json::parse(Gnomon({"writers", "--json"}).out)[0].contains("components"));
}

}  // namespace
}  // namespace gnomon
