import pytest

from sonodiff.utils import cpu


def test_bf16_flags_are_read_from_cpuinfo(tmp_path):
    with_amx = tmp_path / "a"
    with_amx.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_tile amx_bf16\n\nprocessor\t: 1\n"
                        "flags\t\t: fpu sse avx512f avx512_bf16 amx_tile amx_bf16\n")
    plain = tmp_path / "b"
    plain.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n")
    assert cpu.cpu_bf16_flags(str(with_amx)) == ("avx512_bf16", "amx_bf16")
    assert cpu.cpu_bf16_flags(str(plain)) == ()
    assert cpu.cpu_bf16_flags(str(tmp_path / "missing")) == ()


@pytest.mark.parametrize("flags, choice, want, said", [
    (("avx512_bf16",), "auto", "bf16", "avx512_bf16"),
    ((), "auto", "fp32", "no AVX512-BF16"),
    ((), "bf16", "bf16", "slower"),  # an explicit choice is honoured, with a warning
    (("amx_bf16",), "fp32", "fp32", "precision fp32"),
])
def test_resolve_precision_on_cpu(monkeypatch, flags, choice, want, said):
    monkeypatch.setattr(cpu, "cpu_bf16_flags", lambda: flags)
    got, why = cpu.resolve_precision(choice, "cpu")
    assert got == want and said in why


def test_resolve_precision_cuda_and_errors():
    assert cpu.resolve_precision("auto", "cuda", cuda_bf16=True)[0] == "bf16"
    assert cpu.resolve_precision("auto", "cuda", cuda_bf16=False)[0] == "fp32"
    with pytest.raises(ValueError, match="auto, fp32, bf16 or fp16"):
        cpu.resolve_precision("int8", "cpu")
