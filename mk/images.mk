# Images area: Dockerfile.server / Dockerfile.operator on a private Docker engine.
# Debian's docker client (20.10) with BuildKit; engine socket unix:///tmp/ms-docker.sock.
BASE_IMAGE ?= modelship-base:bookworm
IMAGE_TAG ?= dev
TORCH_VARIANT ?= pypi
IMAGES_ENV = BASE_IMAGE=$(BASE_IMAGE) IMAGE_TAG=$(IMAGE_TAG) TORCH_VARIANT=$(TORCH_VARIANT)

.PHONY: docker-up docker-down base-image wheelhouse image-server image-operator images model-images size-report hadolint test-images

docker-up: ## start the private dockerd (unix:///tmp/ms-docker.sock, cache in ~/.cache/modelship/docker)
	@bash hack/docker/dockerd.sh start

docker-down: ## stop the private dockerd
	@bash hack/docker/dockerd.sh stop

base-image: docker-up ## debootstrap + import modelship-base:bookworm (cached tarball)
	@bash hack/docker/base-image.sh import

wheelhouse: venv ## wheels for offline builds into wheelhouse/{server,operator} (TORCH_VARIANT=pypi|cpu|cu126)
	@TORCH_VARIANT=$(TORCH_VARIANT) bash hack/docker/wheelhouse.sh operator
	@TORCH_VARIANT=$(TORCH_VARIANT) bash hack/docker/wheelhouse.sh server

image-server: docker-up ## build modelship-server:$(IMAGE_TAG) (BASE_IMAGE=python:3.11-slim-bookworm for the official base)
	@$(IMAGES_ENV) bash hack/docker/build.sh server

image-operator: docker-up ## build modelship-operator:$(IMAGE_TAG)
	@$(IMAGES_ENV) bash hack/docker/build.sh operator

images: image-operator image-server ## build both images

model-images: image-server ## modelship-models:{v1,v2,broken,slow}: the server image + one baked test model each (node tier, demo, kind)
	@$(IMAGES_ENV) bash hack/docker/model-images.sh

size-report: docker-up ## per image: total size, floor (base + site-packages), overhead ratio
	@$(PY) hack/docker/size_report.py modelship-operator:$(IMAGE_TAG) modelship-server:$(IMAGE_TAG)

hadolint: venv ## lint both Dockerfiles
	@$(VENV)/bin/hadolint Dockerfile.server Dockerfile.operator && echo "hadolint: clean"

test-images: venv ## image tier: builds both images and runs them on a private engine
	$(PY) -m pytest tests/images
