# Installs the scheduled-operation files (tools/systemd/CMakeLists.txt runs
# this at install time, after setting the GNOMON_* variables it uses):
#   PREFIX/lib/systemd/system/gnomon-{backup,prune,verify}.{service,timer}
#   LIBEXECDIR/gnomon/gnomon-job
#   /etc/gnomon/gnomon.conf, unless there is one: an edited config is kept
# CMAKE_INSTALL_PREFIX and DESTDIR are those of this install (for the .deb,
# /usr and CPack's staging directory), so the units name the gnomon-job and
# gnomon-job the gnomon that this install puts in place.

# This runs in the scope of cmake_install.cmake: its own variables are
# prefixed _gnomon_ (a function would keep file(INSTALL)'s additions to the
# install manifest to itself).

# As GNUInstallDirs makes CMAKE_INSTALL_FULL_<dir>, from this install's prefix.
foreach(_gnomon_dir BINDIR LIBEXECDIR)
  if(IS_ABSOLUTE "${GNOMON_INSTALL_${_gnomon_dir}}")
    set(CMAKE_INSTALL_FULL_${_gnomon_dir} "${GNOMON_INSTALL_${_gnomon_dir}}")
  else()
    set(CMAKE_INSTALL_FULL_${_gnomon_dir} "${CMAKE_INSTALL_PREFIX}/${GNOMON_INSTALL_${_gnomon_dir}}")
  endif()
endforeach()

set(_gnomon_src "${GNOMON_SYSTEMD_SOURCE_DIR}")
get_filename_component(_gnomon_tools "${_gnomon_src}" DIRECTORY)
set(_gnomon_staging "${GNOMON_SYSTEMD_STAGING_DIR}")
set(_gnomon_units "")
foreach(_gnomon_job IN LISTS GNOMON_SCHEDULED_JOBS)
  configure_file("${_gnomon_src}/${_gnomon_job}.service.in" "${_gnomon_staging}/${_gnomon_job}.service" @ONLY)
  list(APPEND _gnomon_units "${_gnomon_staging}/${_gnomon_job}.service" "${_gnomon_src}/${_gnomon_job}.timer")
endforeach()
configure_file("${_gnomon_tools}/gnomon-job.in" "${_gnomon_staging}/gnomon-job" @ONLY)

# systemd's unit directory for packages is lib/systemd/system under the
# prefix: /usr/lib/systemd/system for the .deb (merged /usr: /lib is /usr/lib),
# /usr/local/lib/systemd/system for a local install. Both are on systemd's
# search path.
# file(INSTALL) puts DESTDIR in front of each destination, as install() does.
file(INSTALL ${_gnomon_units} DESTINATION "${CMAKE_INSTALL_PREFIX}/lib/systemd/system"
     FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
file(INSTALL "${_gnomon_staging}/gnomon-job" DESTINATION "${CMAKE_INSTALL_FULL_LIBEXECDIR}/gnomon"
     FILE_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE
                      WORLD_READ WORLD_EXECUTE)

# The config lives in /etc/gnomon whatever the prefix, beside the script
# writers' /etc/gnomon/writers.d, and is where gnomon-job looks by default.
# In the .deb it is a conffile (CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA): dpkg
# keeps the administrator's edits on upgrade. A reinstall from the build
# tree keeps an existing one too. A user other than root installing into a
# prefix of their own (no DESTDIR) cannot write /etc: that is said, not fatal.
set(_gnomon_conf "/etc/gnomon/gnomon.conf")
execute_process(COMMAND id -u OUTPUT_VARIABLE _gnomon_uid OUTPUT_STRIP_TRAILING_WHITESPACE)
if(EXISTS "$ENV{DESTDIR}${_gnomon_conf}")
  message(STATUS "Keeping: $ENV{DESTDIR}${_gnomon_conf} (the new default is ${_gnomon_tools}/gnomon.conf)")
elseif("$ENV{DESTDIR}" STREQUAL "" AND NOT _gnomon_uid STREQUAL "0")
  message(WARNING "Not installing ${_gnomon_conf}: only root can. The scheduled jobs "
                  "read it there; as root: install -D -m 0644 ${_gnomon_tools}/gnomon.conf ${_gnomon_conf}")
else()
  file(INSTALL "${_gnomon_tools}/gnomon.conf" DESTINATION "/etc/gnomon"
       FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
endif()
