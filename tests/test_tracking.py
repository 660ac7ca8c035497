"""pipeline/tracking.py: the code state that, with the params, names an MLflow parent run."""
import subprocess

from pipeline.tracking import git_state


def git(root, *args):
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t", "HOME": str(root)})


def test_code_diff_covers_templates_and_new_modules_not_data(tmp_path):
    (tmp_path / ".gitignore").write_text("/reports/\n")
    (tmp_path / "stage.py").write_text("x = 1\n")
    (tmp_path / "page.html.j2").write_text("<p>{{ x }}</p>\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "c")
    clean = git_state(tmp_path)
    assert len(clean["commit"]) == 40 and clean["code_diff"] == ""
    (tmp_path / "notes.txt").write_text("not code\n")
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "index.html").write_text("an ignored output\n")
    assert git_state(tmp_path)["code_diff"] == ""
    (tmp_path / "page.html.j2").write_text("<p>{{ y }}</p>\n")   # an edited template
    template = git_state(tmp_path)["code_diff"]
    assert template != ""
    (tmp_path / "helper.py").write_text("y = 2\n")                # a module not yet added
    added = git_state(tmp_path)["code_diff"]
    assert added not in ("", template)
    (tmp_path / "helper.py").write_text("y = 3\n")
    assert git_state(tmp_path)["code_diff"] not in ("", added)
