GO ?= go
BIN := bin

.PHONY: all deps build up down test bench proto clean

all: build

# Debian packages, pinned static runsc, kernel limits (root; idempotent).
deps:
	./scripts/deps.sh

build:
	./scripts/build.sh

# deps + build + base images + start sandboxd in the background.
up:
	./scripts/up.sh

down:
	./scripts/down.sh

# deps + build + go vet + go test + leak check (what CI runs).
test:
	./scripts/test.sh

bench:
	./scripts/bench.sh

proto:
	PATH="$$PATH:$$(go env GOPATH)/bin" protoc -I api \
	  --go_out=. --go_opt=module=github.com/sandboxd/sandboxd \
	  --connect-go_out=. --connect-go_opt=module=github.com/sandboxd/sandboxd \
	  $(wildcard api/sandboxd/v1/*.proto) $(wildcard api/agent/v1/*.proto)

clean:
	rm -rf $(BIN)
