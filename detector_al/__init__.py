"""detector-al: active learning for object detection inside Label Studio.

The data path, one image at a time, in the order the files read:

- ``io/fetch/`` a task's image reference (upload, local file, cloud or plain URL) -> a local file;
- ``images.py`` the file -> upright RGB pixels (or a clear error);
- ``detector.py`` the adapter: pixels -> :class:`~detector_al.model.predictions.ImagePredictions`, two views (the image and
  its mirror), the one predictions structure of ``types.py``;
- ``uncertainty.py`` the strategy registry (formulas in ``policy/formulas/``): predictions -> one score;
- ``decision.py`` the one policy for an image: score once, CEAL auto-accept (``pseudo_labels.py``), shown boxes;
- ``queue.py`` decisions (+ embeddings, ``selection.py``) -> the batch, its order and Label Studio's numbers;
- ``label_studio/`` -> Label Studio tasks, predictions, the queue annotators get.

Around it: ``service.py`` (what ``/predict`` calls), ``jobs/`` (ingest, training, retraining), ``state/`` (the one
store per ``MODEL_DIR``), ``simulation/`` (the experiment), ``demo/``, ``cli/``; ``ml_backend/`` is the HTTP layer.
"""
