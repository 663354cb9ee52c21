def test_run_true(runtime, bundle):
    assert runtime.run(bundle).returncode == 0


def test_run_echo(runtime, bundle):
    bundle.config["process"]["args"] = ["sh", "-c", "echo hello; hostname"]
    bundle.write()
    out = runtime.run(bundle).stdout
    assert out.split() == ["hello", "pyruntime"]
