# The two commands of the README: `make demo` (main job) and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The PyTorch build this project is tested with; override with `make TORCH= demo` to let pip choose.
TORCH ?= torch==2.14.1 torchvision==0.29.1
# Test processes (pytest-xdist), each test file in one of them: 2 fits a 2-core machine's time and memory.
JOBS ?= 2

.PHONY: setup browser web litert demo test test-litert bench clean

$(BIN)/imgclf: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH) -e '.[dev]'
	@touch $@

setup: $(BIN)/imgclf

demo: setup
	$(BIN)/imgclf demo

# The report's browser test drives Debian's headless Chromium; without root or apt it is skipped, loudly.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
		>/dev/null 2>&1 || echo "WARNING: could not install chromium; the browser test will be skipped"

# The web export's runtime: onnxruntime-web's WebAssembly files, pinned, from the npm registry into the cache
# (the first web export would fetch them too; without npm its tests fail and say so).
web: setup
	@$(BIN)/python -m imgclf.deploy.web || echo "WARNING: could not fetch onnxruntime-web (is npm installed?); the web export's tests will fail"

test: setup browser web
	$(BIN)/python -m pytest -n $(JOBS) --dist loadfile -m "not litert"

# LiteRT's converter is about 750 MB (jax, its own compiler): more than CI's ten minutes allow, so its conversion
# tests run here. `pip install 'imgclf[litert]'` would also pull transformers and kagglehub and pin older pydantic
# and typing_extensions for LLM tools imgclf never calls; these are the packages the image path imports, pinned.
LITERT := litert-torch==0.10.0 ai-edge-litert==2.3.0 litert-converter==0.5.0 ai-edge-quantizer==0.10.0 \
	jax==0.10.2 jaxlib==0.10.2 torchao==0.18.0 rich markdown-it-py mdurl opt_einsum immutabledict
litert: setup
	$(BIN)/python -m pip install -q --no-deps $(LITERT)

test-litert: litert
	$(BIN)/python -m pytest -n $(JOBS) tests/test_litert_export.py

bench: setup
	$(BIN)/python bench/fashion_mnist.py

clean:
	rm -rf $(VENV) runs build *.egg-info
