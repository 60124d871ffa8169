#!/usr/bin/env bash
# Writes the gnomon(1) man page from the program's own --help texts, so the
# page cannot drift from the options the binary accepts.
# Usage: tools/make-man.sh GNOMON_BINARY OUTPUT
set -euo pipefail
bin=$1 out=$2
g() { (exec -a gnomon "$bin" "$@"); }
# roff: a backslash doubles; a line starting with . or ' is protected.
esc() { sed -e 's/\\/\\e/g' -e "s/^\\([.']\\)/\\\\\&\\1/"; }
version=$(g --version | awk '{print $2}')
help=$(g --help)
commands=$(printf '%s\n' "$help" | awk '/^Subcommands:/{on=1; next} on && /^  [a-z]/{print $1} on && /^$/{exit}')
{
  echo ".TH GNOMON 1 \"\" \"gnomon $version\" \"User Commands\""
  echo ".SH NAME"
  echo "gnomon \\- block-level snapshot imaging for Linux, with VSS-style application consistency"
  echo ".SH SYNOPSIS"
  echo ".B gnomon"
  echo "[\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]"
  echo ".SH DESCRIPTION"
  printf '%s\n' "$help" | awk '/^Usage:/{exit} {print}' | esc
  echo ".PP"
  echo "Global options go before or after the command. Every command is described below"
  echo "with the text of \\fBgnomon \\fICOMMAND\\fB --help\\fR."
  echo ".SH OPTIONS"
  echo ".nf"
  printf '%s\n' "$help" | awk '/^Options:/{on=1; next} on && /^$/{exit} on{print}' | esc
  echo ".fi"
  echo ".SH COMMANDS"
  for c in $commands; do
    echo ".SS $c"
    echo ".nf"
    g "$c" --help | esc
    echo ".fi"
  done
  echo ".SH EXIT STATUS AND ENVIRONMENT"
  echo ".nf"
  printf '%s\n' "$help" | awk '/^Exit codes:/{on=1} on{print}' | esc
  echo ".fi"
  echo ".SH SEE ALSO"
  echo "The README and format/FORMAT.md in gnomon's sources; \\fBgnomon-writer-sqlite\\fR and"
  echo "\\fBgnomon-writer-postgres\\fR, the writer programs installed beside it."
} >"$out"
