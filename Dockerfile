# Underpass image: the same `underpass` CLI runs the operator, workers and connectors.
# NOTE: not built in this project's CI (its machines have no container engine); `make test`
# exercises every component from the same dist/ this image packages.
FROM node:20-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm install --no-fund --no-audit
COPY . .
RUN npx tsc -p tsconfig.build.json && npm prune --omit=dev --no-fund --no-audit

FROM node:20-bookworm-slim
WORKDIR /opt/underpass
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY --from=build /src/bin ./bin
USER 65532:65532
# The Node flags of bin/underpass's first line (why: there).
ENTRYPOINT ["node", "--min-semi-space-size=16", "/opt/underpass/bin/underpass"]
