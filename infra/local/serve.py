"""moto server for the local emulator (infra/local/emulator), with a few changes.

moto 5.2.5 appends every model instance it creates to a class-wide list, for its dashboard,
and never lets go: each TransactWriteItems deep-copies the tables it touches, so under
transactions its memory only grows (GBs in a long `latch dev` session or a large test run).
Latch never reads that list; not keeping it changes nothing an AWS API call can observe.
"""

from moto.core.common_models import BaseModel
from moto.server import main


def _untracked(cls, *args, **kwargs):
    return object.__new__(cls)


BaseModel.__new__ = _untracked

# Native pipeline runs, as AWS reports them. moto runs no builds and no pipeline actions, and
# reports every build SUCCEEDED the first time it is read and every execution Succeeded at once;
# Latch confirms a native start by reading its run, so those answers would refuse every start.
# A build here stays IN_PROGRESS and an execution InProgress (nothing ever runs them to an end),
# and a build reports what it runs with, as CodeBuild does: the project's source and buildspec
# unless StartBuild overrode it, and its service role unless overridden.
import moto.codebuild.models as _codebuild  # noqa: E402  (after the patch above)
import moto.codebuild.responses as _codebuild_responses  # noqa: E402
import moto.codepipeline.models as _codepipeline  # noqa: E402


def _batch_get_builds(self, ids):
    return [b for builds in self.build_metadata_history.values() for b in builds if b["id"] in ids]


_codebuild.CodeBuildBackend.batch_get_builds = _batch_get_builds
_start_build = _codebuild_responses.CodeBuildResponse.start_build


def _start_build_as_asked(self):
    result = _start_build(self)
    name = self._get_param("projectName")
    build = self.codebuild_backend.build_metadata[name].build_metadata
    project = self.codebuild_backend.codebuild_projects[name].project_metadata
    build["serviceRole"] = self._get_param("serviceRoleOverride") or project["serviceRole"]
    build["source"] = dict(project.get("source") or {})
    if self._get_param("buildspecOverride"):
        build["source"]["buildspec"] = self._get_param("buildspecOverride")
    return result


_codebuild_responses.CodeBuildResponse.start_build = _start_build_as_asked
_execution_init = _codepipeline.PipelineExecution.__init__


def _execution_in_progress(self, *args, **kwargs):
    _execution_init(self, *args, **kwargs)
    self.status = "InProgress"


_codepipeline.PipelineExecution.__init__ = _execution_in_progress

if __name__ == "__main__":
    main()
