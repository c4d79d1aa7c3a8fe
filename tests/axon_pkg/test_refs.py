import pytest

from axon_pkg.errors import RefError
from axon_pkg.refs import parse_ref


@pytest.mark.parametrize("text, ns, repo, rev, sel", [
    ("hf/sentence-transformers/all-MiniLM-L6-v2@latest", "hf", "sentence-transformers/all-MiniLM-L6-v2", "latest", None),
    ("hf/distilgpt2", "hf", "distilgpt2", "latest", None),
    ("hf/org/model@v1.0", "hf", "org/model", "v1.0", None),
    ("hf/org/model@" + "a" * 40, "hf", "org/model", "a" * 40, None),
    ("hf/org/model@refs/pr/1", "hf", "org/model", "refs/pr/1", None),
    ("hf/org/repo-GGUF:Q8_0@main", "hf", "org/repo-GGUF", "main", "Q8_0"),
    ("hf/org/repo-GGUF:Q4_K_M", "hf", "org/repo-GGUF", "latest", "Q4_K_M"),
    ("pytorch/vision/resnet50@latest", "pytorch", "vision/resnet50", "latest", None),
    ("pytorch/vision/resnet50@IMAGENET1K_V2", "pytorch", "vision/resnet50", "IMAGENET1K_V2", None),
    ("pytorch/pytorch/vision:resnet18@v0.10.0", "pytorch", "pytorch/vision", "v0.10.0", "resnet18"),
    ("tfhub/google/imagenet/resnet_v2_50/classification/5@latest", "tfhub",
     "google/imagenet/resnet_v2_50/classification/5", "latest", None),
    ("tfhub/google/resnet-v2/tensorFlow2/50-classification@2", "tfhub",
     "google/resnet-v2/tensorFlow2/50-classification", "2", None),
    ("modelscope/damo/cv_resnet50_image-classification@latest", "modelscope",
     "damo/cv_resnet50_image-classification", "latest", None),
])
def test_parse(text, ns, repo, rev, sel):
    r = parse_ref(text)
    assert (r.namespace, r.repo, r.revision, r.selector) == (ns, repo, rev, sel)
    assert r.model_id == f"{ns}/{repo}@{rev}"


@pytest.mark.parametrize("text, message", [
    ("pytorch/vision", "expected pytorch/vision/<model>"),
    ("pytorch/owner/repo", "needs its entry point: pytorch/<owner>/<repo>:<entry>"),
    ("tfhub/x", "expected tfhub/<publisher>/<model path>"),
    ("tfhub/a/b/c/d/e/f/g/h/i", "expected tfhub/<publisher>/<model path>"),
    ("modelscope/a/b/c", "expected modelscope/org/model"),
    ("s3/bucket/model", "unknown namespace 's3'; supported: hf/ .*pytorch/ .*tfhub/ .*modelscope/"),
    ("hf/a/b/c", "expected hf/org/model"),
    ("hf/", "expected hf/org/model"),
    ("hf/org/model@a@b", "more than one '@'"),
    ("hf/org/model@../x", "invalid revision"),
    ("hf/org/model:bad sel", "invalid file selector"),
    ("", "empty model reference"),
])
def test_bad_refs(text, message):
    with pytest.raises(RefError, match=message):
        parse_ref(text)
