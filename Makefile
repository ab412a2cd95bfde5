GO ?= go
BIN := bin

.PHONY: all build up test bench proto clean

all: build

build:
	./scripts/build.sh

up:
	./scripts/up.sh

test:
	./scripts/test.sh

bench:
	./scripts/bench.sh

proto:
	PATH="$$PATH:$$(go env GOPATH)/bin" protoc -I api \
	  --go_out=. --go_opt=module=github.com/sandboxd/sandboxd \
	  --connect-go_out=. --connect-go_opt=module=github.com/sandboxd/sandboxd \
	  api/sandboxd/v1/sandboxd.proto api/agent/v1/agent.proto

clean:
	rm -rf $(BIN)
