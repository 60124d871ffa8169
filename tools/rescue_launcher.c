/* The launcher of a rescue bundle (tools/make-rescue.sh). Started as
 * DIR/gnomon or DIR/bin/NAME, it runs DIR/libexec/NAME through the bundle's
 * own dynamic loader and libraries (DIR/lib), so the bundle needs nothing
 * of the system it runs on: not even a shell, which is why this is a static
 * C program and not a script. GNOMON_RESCUE_DIR tells gnomon where the
 * bundle's helper programs (e2fsck, resize2fs, tune2fs, mlabel) are. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char** argv) {
  char self[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) {
    perror("gnomon rescue launcher: /proc/self/exe (is /proc mounted?)");
    return 127;
  }
  self[n] = '\0';
  char* slash = strrchr(self, '/');
  const char* name = slash + 1;
  *slash = '\0';  // self is now the launcher's directory
  char root[PATH_MAX];
  snprintf(root, sizeof root, "%s", self);
  size_t len = strlen(root);
  if (len >= 4 && strcmp(root + len - 4, "/bin") == 0) root[len - 4] = '\0';
  char loader[PATH_MAX], libs[PATH_MAX], real[PATH_MAX];
  snprintf(loader, sizeof loader, "%s/lib/ld-linux-x86-64.so.2", root);
  snprintf(libs, sizeof libs, "%s/lib", root);
  snprintf(real, sizeof real, "%s/libexec/%s", root, name);
  setenv("GNOMON_RESCUE_DIR", root, 1);
  char** args = calloc((size_t)argc + 6, sizeof *args);
  if (!args) return 127;
  int k = 0;
  args[k++] = loader;
  args[k++] = "--library-path";
  args[k++] = libs;
  args[k++] = "--argv0";
  args[k++] = argv[0];
  args[k++] = real;
  for (int i = 1; i < argc; ++i) args[k++] = argv[i];
  args[k] = NULL;
  execv(loader, args);
  fprintf(stderr, "gnomon rescue launcher: cannot run %s: ", real);
  perror(loader);
  return 127;
}
