from detector_al.cli import app

app(prog_name="detector-al")
