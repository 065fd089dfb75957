import io

from capstan.merge.progress import Progress


def test_terminal_gets_a_redrawn_bar():
    stream = io.StringIO()
    progress = Progress(stream, tty=True)
    progress.start("out.mp4", 10.0)
    progress.update(5.0)
    progress.finish()
    text = stream.getvalue()
    assert text.startswith("\rout.mp4 [")
    assert "100%" in text and "#" * 30 in text
    assert text.endswith("\n") and text.count("\n") == 1


def test_pipes_get_plain_lines_in_steps():
    stream = io.StringIO()
    progress = Progress(stream)  # StringIO is not a terminal
    progress.start("out.mp4", 100.0)
    for done in range(0, 101):
        progress.update(float(done))
    progress.finish()
    lines = stream.getvalue().splitlines()
    assert [line.split(": ")[1].split("%")[0] for line in lines] == ["0", "25", "50", "75", "100"]
    assert "\r" not in stream.getvalue()
