% A no-op in place of Octave's title: the timed script's plots are not drawn.
function varargout = title(varargin)
  varargout = cell(1, nargout);
end
