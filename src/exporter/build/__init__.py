"""Building one job: the job and its plan, each artifact exported, loaded back and compared with
eager PyTorch (``compare``), quantized (``quantize``), the build folder as one transaction
(``folder``), ``metadata.json`` written (``metadata``); ``runner.run_export`` drives them in order."""
