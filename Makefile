# rsicrc: set-up, tests, benchmarks, demo and plugin package.
# `make setup` works on a fresh Debian 12 machine (it installs QGIS from Debian when missing).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
SYSTEM_PYTHON := /usr/bin/python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := qgis python3-qgis python3-venv xvfb debootstrap gdal-bin
export QT_QPA_PLATFORM ?= offscreen

.PHONY: setup system-deps test test-chroots bench demo package package-upload clean

setup: system-deps $(VENV)/.installed

system-deps:
	@dpkg -s $(APT_PACKAGES) >/dev/null 2>&1 || { \
	  echo "installing Debian packages: $(APT_PACKAGES)"; \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $(APT_PACKAGES); }

# The venv sees the system site-packages so that QGIS's Python bindings (Debian's python3 only)
# import in the same interpreter as the project.
$(VENV)/.installed: pyproject.toml constraints-debian12.txt
	test -x $(PY) || $(SYSTEM_PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,ray]' -c constraints-debian12.txt
	touch $@

test: setup
	$(PY) -m pytest
	@$(MAKE) --no-print-directory test-chroots

# The QGIS, pipeline and set-up tests again on the QGIS users run today: Debian 13 (QGIS 3.40 LTR,
# Python 3.13) and sid (QGIS 3.44, Python 3.14), in chroots built once under
# /var/cache/rsicrc-chroots (root; tools/chroot_tests.sh says how, and how it keeps /dev safe).
# Without root there are no chroots: said, and skipped.
CHROOT_DISTROS ?= trixie,sid
CHROOT_TESTS ?= tests/qgis tests/pipeline tests/clip
test-chroots:
	@if [ "$$(id -u)" != 0 ]; then echo "test-chroots: skipped: the chroots need root"; \
	else tools/chroot_tests.sh $(CHROOT_DISTROS) $(CHROOT_TESTS); fi

bench: setup
	$(PY) benchmarks/run_all.py

demo: setup
	$(PY) -m rsicrc.pipeline.demo $(if $(MODEL),--model $(MODEL))

# The zip for "Install from ZIP"; package-upload also refuses what plugins.qgis.org would reject
# (it needs real email/homepage/repository/tracker addresses in metadata.txt first).
package:
	$(SYSTEM_PYTHON) tools/package_plugin.py --local dist

package-upload:
	$(SYSTEM_PYTHON) tools/package_plugin.py dist

clean:
	rm -rf dist build *.egg-info .pytest_cache tests/artifacts benchmarks/results
