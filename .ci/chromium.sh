# Chromium and chromedriver for the console's browser test (tests/tests/console_e2e.rs).
# Sourced by test.sh: installs Debian's `chromium` and `chromium-driver` when missing (as
# root; otherwise it says which packages to install) and exports TASKQ_TEST_CHROMIUM and
# TASKQ_TEST_CHROMEDRIVER. It never makes the test skip: without a browser it fails.

__taskq_chromium_log() { echo "chromium.sh: $*" >&2; }

__taskq_chromium_setup() {
    local browser driver
    browser="$(command -v chromium || true)"
    driver="$(command -v chromedriver || true)"
    if [ -z "$browser" ] || [ -z "$driver" ]; then
        if [ "$(id -u)" != "0" ]; then
            __taskq_chromium_log "Chromium or chromedriver is missing and we are not root: install the 'chromium' and 'chromium-driver' packages"
            return 0
        fi
        __taskq_chromium_log "installing Chromium and chromedriver from Debian's packages"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2 || return 0
        apt-get install -y -qq --no-install-recommends chromium chromium-driver >&2 || return 0
        browser="$(command -v chromium || true)"
        driver="$(command -v chromedriver || true)"
    fi
    if [ -n "$browser" ]; then export TASKQ_TEST_CHROMIUM="$browser"; fi
    if [ -n "$driver" ]; then export TASKQ_TEST_CHROMEDRIVER="$driver"; fi
}

__taskq_chromium_setup
