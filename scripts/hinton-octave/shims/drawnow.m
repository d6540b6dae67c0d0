% A no-op in place of Octave's drawnow: the timed script's plots are not drawn.
function varargout = drawnow(varargin)
  varargout = cell(1, nargout);
end
