#!/bin/sh
# deploy.sh: what a CI job runs to deploy a bundle to a running polyplug-host on another
# machine. Builds the bundle (optional), signs it, pushes it over TCP with a token and TLS,
# and fails the job on any outcome but LOADED or RELOADED.
#
#   usage: deploy.sh BUNDLE_DIR
#
# Settings (environment; a CI system's secrets go in the variables, never in files):
#   POLYPLUG_HOST         host:port of the host (its --listen), e.g. deploy.example.com:50051
#   POLYPLUG_TOKEN        the host's bearer token (its --auth-token-file)
#   POLYPLUG_TLS_CA       the CA certificate file that signed the host's certificate
#   POLYPLUG_SIGNING_KEY  the signing key file (polyplugctl keygen's signing.key); unset:
#                         the bundle is pushed unsigned (a host with
#                         --signature-policy required refuses it)
#   POLYPLUG_BUILD        optional: a command that builds BUNDLE_DIR first, e.g.
#                         "cmake --build build --target greeter"
#   POLYPLUGCTL           the polyplugctl to run (default: polyplugctl on PATH)
#   POLYPLUG_REQUEST_ID   optional: the push's request id (default: the CI job's, if known),
#                         so that a retried job does not deploy twice
#
# Exit status: 0 when the bundle is live (LOADED, or RELOADED with every dependent);
# polyplugctl's code otherwise (1 failed, with the reason; 2 usage; 3 unreachable or
# refused credentials; 4 the deadline passed before the outcome was known).
set -eu

if [ "$#" -ne 1 ]; then
  echo "usage: deploy.sh BUNDLE_DIR" >&2
  exit 2
fi
bundle=$1
ctl=${POLYPLUGCTL:-polyplugctl}
: "${POLYPLUG_HOST:?set POLYPLUG_HOST to the host's host:port}"
: "${POLYPLUG_TOKEN:?set POLYPLUG_TOKEN to the host's bearer token}"
: "${POLYPLUG_TLS_CA:?set POLYPLUG_TLS_CA to the CA certificate of the host}"

# 1. Build.
if [ -n "${POLYPLUG_BUILD:-}" ]; then
  sh -c "$POLYPLUG_BUILD"
fi

# 2. Sign: bundle.sig covers every file of the directory, so sign after the build.
if [ -n "${POLYPLUG_SIGNING_KEY:-}" ]; then
  "$ctl" sign "$bundle" --key "$POLYPLUG_SIGNING_KEY"
fi

# 3. Push, and let polyplugctl's exit status decide the job. The request id makes a
# retried job safe: the host answers a repeated push with the first one's outcome.
request_id=${POLYPLUG_REQUEST_ID:-${CI_JOB_ID:-${GITHUB_RUN_ID:-}}}
set -- push "$bundle" --timeout 5m
if [ -n "$request_id" ]; then
  set -- "$@" --request-id "deploy-$request_id"
fi
# POLYPLUG_TOKEN is read by polyplugctl itself: the token never appears in argv.
exec "$ctl" --host "$POLYPLUG_HOST" --tls-ca "$POLYPLUG_TLS_CA" "$@"
