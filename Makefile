# The two commands of the README, and the pieces they are made of.
.PHONY: demo test tools lint crds

# Build the pinned Kubernetes programs (first run only), then run the main job (a release
# build of Offpeak; `make demo ARGS="--run-for 10m --keep"` passes options).
demo: tools
	cargo run --release -p offpeak -- demo $(ARGS)

# Build the pinned Kubernetes programs (first run only), then run every test.
test: tools
	cargo test --workspace

tools:
	tools/build.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
