"""MLflow's entry to a logged autoq model (models from code): MLflow runs this file to load it; autoq never imports it."""

from mlflow.models import set_model

from autoq.export.pyfunc import QuantizedPyfunc

set_model(QuantizedPyfunc())
