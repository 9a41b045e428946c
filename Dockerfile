# The Underpass image for people who build with Docker: the same layout, user and entry point as
# `make image`, which builds it without any container engine (image/build.sh; docs/image.md).
#
# NOT built in this project: its machines have no container engine. It is kept in step with
# image/build.sh by hand — change both together. test/image/image.test.ts checks that the final
# stage's USER, WORKDIR, ENTRYPOINT and ENV equal the built image's; the steps below mirror build.sh's.
#
# Node: the release image/node.sh pins (the official build, which the node images carry too), on
# Debian 12's glibc and libstdc++ from distroless/cc: no shell, no package manager, nothing written
# at run time (runs with a read-only root file system).
ARG NODE_VERSION=24.22.3

FROM node:${NODE_VERSION}-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
# `npm ci` rejects npm 11 lockfiles that omit other platforms' optional packages (see Makefile).
RUN npm install --no-fund --no-audit
COPY . .
# The product without test helpers and benchmarks (image/tsconfig.json), then the production
# dependencies without what node never loads: type declarations, source maps, other platforms'
# native prebuilds. Files owned by root, writable by no one else.
RUN mkdir -p /opt/underpass \
 && npx tsc -p image/tsconfig.json --outDir /opt/underpass/dist \
 && npm prune --omit=dev --no-fund --no-audit \
 && find node_modules -type f \( -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' -o -name '*.map' \) -delete \
 && find node_modules -type d -path '*/prebuilds/*' -prune -not -name "linux-$(node -p process.arch)" -exec rm -rf {} + \
 && rm -f node_modules/.package-lock.json \
 && cp -r package.json bin node_modules /opt/underpass/ \
 && chmod -R u+rwX,go+rX,go-w /opt/underpass

FROM gcr.io/distroless/cc-debian12
COPY --from=build /usr/local/bin/node /usr/local/bin/node
COPY --from=build /opt/underpass /opt/underpass
ENV PATH=/usr/local/bin:/usr/bin:/bin
WORKDIR /opt/underpass
# 65532 is distroless's "nonroot" (image/build.sh writes the same passwd/group entries).
USER 65532:65532
# The Node flags of bin/underpass's first line (why: there); image/build.sh reads them from it.
ENTRYPOINT ["node", "--min-semi-space-size=16", "--max-semi-space-size=16", "--scavenger-max-new-space-capacity-mb=8", "/opt/underpass/bin/underpass"]
