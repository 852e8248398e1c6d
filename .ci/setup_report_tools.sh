#!/usr/bin/env bash
# Install what the report tests need (tests/report/: markers `browser` and `latex`).
#
# Run as root on Debian 12. Idempotent: packages already installed are skipped, and
# nothing is downloaded when all of them are present. Recommends are not installed.
#
#   chromium                  headless browser: renders report.html, console errors, screenshot
#   poppler-utils             pdfinfo (page count) and pdftoppm (PDF -> PNG for a look)
#   texlive-latex-base        pdflatex, LaTeX kernel, geometry, hyperref, graphicx (the figures: matplotlib's PDFs)
#   texlive-latex-recommended booktabs, xcolor, caption, microtype, lmodern support
#   lmodern                   lmodern.sty: scalable T1 fonts (fonts-lmodern alone has no .sty;
#                             without it T1 text falls back to bitmap EC fonts)
#   texlive-fonts-recommended Times/Helvetica-class Type 1 fonts (not strictly needed: lmodern
#                             comes with texlive-base); left out to keep the install small
#
# texlive-latex-extra (~400 MB) and texlive-pictures (pgf/TikZ) are NOT needed: the template only uses
# packages above (checked with pdflatex -recorder on a rendered report).
set -euo pipefail

PACKAGES=(chromium poppler-utils texlive-latex-base texlive-latex-recommended lmodern)

log() { echo "[setup_report_tools] $*"; }

if [ "$(id -u)" -ne 0 ]; then
    log "must run as root (apt-get install)"
    exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

start=$(date +%s)
if [ "${#missing[@]}" -eq 0 ]; then
    log "all present: ${PACKAGES[*]}"
else
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Refresh package lists only when they are missing or older than a day.
    if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mtime -1 2>/dev/null | head -n1)" ]; then
        apt-get update -qq
    fi
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Check that what the tests call is really there.
for tool in chromium pdflatex pdfinfo pdftoppm kpsewhich; do
    command -v "$tool" >/dev/null || { log "missing after install: $tool"; exit 1; }
done
for sty in booktabs.sty graphicx.sty xcolor.sty hyperref.sty geometry.sty lmodern.sty; do
    kpsewhich "$sty" >/dev/null || { log "missing LaTeX package: $sty"; exit 1; }
done
log "ok in $(( $(date +%s) - start )) s"
