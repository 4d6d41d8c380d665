#!/bin/sh
# The install step both images run (docker/vllm and docker/trt), from the checkout their COPY lines
# put in the working directory: install Yap with the image's extras, check that the entrypoint's
# command starts, then add the unprivileged user and the mount points. Usage: sh docker/install.sh EXTRAS
set -eu
python3 -m pip install --no-cache-dir ".[$1]"
# a package missing from the COPY lines fails the build here, not the container's start
yap serve --help > /dev/null
useradd --create-home --uid 10001 yap
mkdir -p /engines /models
chown yap:yap /engines
