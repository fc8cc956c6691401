"""What the README and the docs promise a new user: the paths they cite exist inside the repository, and the
README's main install command installs what the examples it mentions import."""
import configparser
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "data" / "README.md", ROOT / "models" / "sio2.md", ROOT / "models" / "sio2_md.md",
        ROOT / "ase_etgnn" / "qe.py"]
#: imports that only the `[phonons]` extra provides
PHONONS_MODULES = ("phonopy", "matplotlib", "ase_etgnn.spectra")


def _needs_phonons(script: Path) -> bool:
    """``script`` or an ``examples/_helper.py`` it imports imports a module of the ``[phonons]`` extra."""
    text = script.read_text()
    helpers = re.findall(r"^\s*from\s+(_[a-z]\w*)\s+import", text, re.M)
    if any(_needs_phonons(script.parent / f"{h}.py") for h in helpers):
        return True
    return any(re.search(rf"^\s*(from|import)\s+{re.escape(m)}\b", text, re.M) for m in PHONONS_MODULES)


def test_protocol_shipped_and_cited_from_docs():
    assert (ROOT / "docs" / "sio2_protocol.md").is_file()
    for doc in DOCS:
        text = doc.read_text()
        assert "shared/reference/sio2_protocol" not in text, doc
        for cited in re.findall(r"docs/[\w./-]+\.md", text):
            assert (ROOT / cited).is_file(), (doc, cited)


def test_readme_main_command_installs_what_its_examples_need():
    readme = (ROOT / "README.md").read_text()
    main_cmd = next(line for line in readme.splitlines() if "pip install" in line and "examples/" in line)
    extras = set(re.findall(r"\.\[([\w,]+)\]", main_cmd)[0].split(",")) if ".[" in main_cmd else set()
    mentioned = sorted(set(re.findall(r"examples/(\w+\.py)", readme)))
    assert "quartz_ir_raman.py" in mentioned and "quartz_calculator.py" in mentioned
    assert _needs_phonons(ROOT / "examples" / "quartz_ir_raman.py")  # through examples/_gamma_ir_raman.py
    for name in mentioned:
        script = ROOT / "examples" / name
        assert script.is_file(), name
        if _needs_phonons(script):
            assert "phonons" in extras, f"{name} needs the [phonons] extra; README main command: {main_cmd}"
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    phonons = cfg["options.extras_require"]["phonons"].split()
    assert {"phonopy", "matplotlib"} <= set(phonons)
    assert "[phonons]" in readme.replace("`", "") and "extra" in readme  # the extras are documented


def test_training_example_states_its_memory():
    """examples/train_config.toml says how much memory it needs and how to need less (measured numbers)."""
    from ase_etgnn.train import load_train_config

    text = (ROOT / "examples" / "train_config.toml").read_text()
    assert re.search(r"batch_size = 40 peaks at [\d.]+ GB", text)
    assert re.search(r"^# batch_size = \d+ ", text, re.M)
    assert load_train_config(str(ROOT / "examples" / "train_config.toml")).batch_size == 40
